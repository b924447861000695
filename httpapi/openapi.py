"""The OpenAPI document of the HTTP API (served at ``/openapi.json``)."""

from __future__ import annotations


def openapi_document() -> dict:
    return {"openapi": "3.0.3", "info": {"title": "esnode HTTP API", "version": "1"},
            "paths": {}}

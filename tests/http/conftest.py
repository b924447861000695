"""A one-node esnode (in this process, memory store) with its HTTP API on a free port."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from esnode.actors.node import Factories, Node
from esnode.core.types import StorageLimits
from tests.conftest import free_port, single_node_topology, start_leader

ATOM = "application/vnd.eventstore.atom+json"
EVENTS = "application/vnd.eventstore.events+json"


@dataclass
class HttpNode:
    node: Node
    base: str
    session: requests.Session

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, accept: str = ATOM, **kw) -> requests.Response:
        headers = {"Accept": accept, **kw.pop("headers", {})}
        return self.session.get(self.url(path), headers=headers, timeout=15, **kw)

    def post_events(self, stream: str, events: list[dict], **headers: str) -> requests.Response:
        import json

        return self.session.post(self.url(f"/streams/{stream}"), data=json.dumps(events),
                                 headers={"Content-Type": EVENTS, **headers}, timeout=15,
                                 allow_redirects=False)


def ev(event_type: str = "Tested", data: object = None, eid: str | None = None) -> dict:
    return {"eventId": eid or str(uuid.uuid4()), "eventType": event_type,
            "data": {"n": 1} if data is None else data}


def small_limits_face(limits: StorageLimits, **face_options):
    """An HTTP face factory with other storage limits and timeouts (tests of bad input)."""
    from esnode.httpapi.api import NodeView, build_app
    from esnode.httpapi.face import HttpFace

    timeouts = {k: face_options.pop(k) for k in ("body_timeout", "request_timeout")
                if k in face_options}

    def factory(node: Node) -> HttpFace:
        view = NodeView(node.board, node.topology, node.config.name, limits)
        return HttpFace(node.config.external_http_bind, node._on_client,
                        lambda face: build_app(face, view, **timeouts), **face_options)
    return factory


def start_http_node(factories: Factories | None = None) -> HttpNode:
    port = free_port()
    node = start_leader(Node(single_node_topology(external_http_port=port), "node1",
                             factories))
    return HttpNode(node, f"http://127.0.0.1:{port}", requests.Session())


@pytest.fixture
def http_node() -> Iterator[HttpNode]:
    h = start_http_node()
    yield h
    h.session.close()
    h.node.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


from tests.http.cluster import http_cluster, make_http_cluster  # noqa: E402,F401  (fixtures)

"""Property-based fuzzing of the HTTP API against a live node, driven by its OpenAPI document.

Hypothesis picks a documented path and verb, fills the path parameters with valid or hostile
values, adds documented headers with valid or hostile values, and sends a valid, almost valid
or random body with a documented or random Content-Type. Every answer must be a documented
status that is not a server error, and the node must keep serving. The CI run is short; a
longer one: ``ESNODE_FUZZ_EXAMPLES=5000 python -m pytest tests/http/test_fuzz.py -s``."""

from __future__ import annotations

import json
import os
import re
import uuid
from urllib.parse import quote

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esnode.httpapi.openapi import openapi_document
from tests.http.conftest import start_http_node

EXAMPLES = int(os.environ.get("ESNODE_FUZZ_EXAMPLES", "150"))
SPEC = openapi_document()
OPERATIONS = [(path, verb.upper(), op) for path, ops in SPEC["paths"].items()
              for verb, op in ops.items()]
ALLOWED = {200, 201, 204, 304, 307, 400, 404, 405, 406, 408, 410, 413, 415}

printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
hostile = st.one_of(printable, st.integers(-2**70, 2**70).map(str),
                    st.text(max_size=20).map(lambda s: quote(s, safe="")))
path_values = {
    "stream": st.one_of(st.sampled_from(["fuzz", "fuzz-2", "$all", "%24all", "$$fuzz"]),
                        hostile.filter(bool).map(lambda s: quote(s, safe="%"))),
    "event": st.one_of(st.sampled_from(["0", "1", "head", "0" * 32]), hostile.filter(bool)
                       .map(lambda s: quote(s, safe=""))),
    "count": st.one_of(st.integers(-5, 20_000).map(str), hostile.filter(bool)
                       .map(lambda s: quote(s, safe=""))),
    "name": st.one_of(st.sampled_from(["dashboard.js", "dashboard.css", "index.html"]),
                      hostile.filter(bool).map(lambda s: quote(s, safe=""))),
    "guid": st.one_of(st.uuids().map(str), hostile.filter(bool).map(lambda s: quote(s, safe=""))),
}
header_values = st.one_of(st.sampled_from(["-2", "-1", "-4", "0", "3", "true", "False", "1",
                                           "x", str(uuid.uuid4()), "Tested"]),
                              printable.map(str.strip))  # requests refuses edge spaces
event = st.fixed_dictionaries({"eventId": st.one_of(st.uuids().map(str), printable),
                               "eventType": st.one_of(st.just("T"), printable)},
                              optional={"data": st.recursive(
                                  st.none() | st.booleans() | st.integers(-2**60, 2**60)
                                  | printable, lambda c: st.lists(c, max_size=3)
                                  | st.dictionaries(printable, c, max_size=3), max_leaves=8),
                                  "metadata": printable})
bodies = st.one_of(st.lists(event, max_size=4).map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=200), printable.map(str.encode),
                   st.dictionaries(printable, printable, max_size=3).map(
                       lambda d: json.dumps(d).encode()))


@st.composite
def requests_(draw):
    path, verb, op = draw(st.sampled_from(OPERATIONS))
    url = re.sub(r"\{(\w+)\}", lambda m: draw(path_values[m.group(1)]), path)
    headers = {}
    for param in op["parameters"]:
        if param["in"] == "header" and draw(st.booleans()):
            value = ("1" if draw(st.booleans()) else "x") if param["name"] == "ES-LongPoll" \
                else draw(header_values)
            headers[param["name"]] = value
    if url.endswith("/forward/" + url.rsplit("/", 1)[-1]) and "ES-LongPoll" in headers:
        headers["ES-LongPoll"] = "1"  # keep the run short: a long poll waits at most 1 s
    media = list(op.get("requestBody", {}).get("content", {})) + ["text/plain", "", "a/b"]
    body = draw(bodies) if verb in ("POST", "DELETE") else None
    if body is not None:
        headers["Content-Type"] = draw(st.sampled_from(media))
    if draw(st.integers(0, 9)) == 0:
        verb = draw(st.sampled_from(["PUT", "PATCH", "DELETE", "POST", "GET"]))
    query = draw(st.sampled_from(["", "?embed=body", "?embed=rich", "?format=json",
                                  "?embed=%00", "?liveCode=200"]))
    return verb, url + query, headers, body


def test_fuzz_the_api_from_its_openapi_document():
    h = start_http_node()
    session = requests.Session()
    try:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(requests_())
        def one(case):
            verb, path, headers, body = case
            r = session.request(verb, h.base + path, headers=headers, data=body, timeout=20,
                                allow_redirects=False)
            assert r.status_code in ALLOWED, (verb, path, headers, body, r.status_code,
                                              r.reason, r.text[:300])
            if r.status_code >= 400:
                assert r.reason, "every error says what it is"

        one()
        assert session.get(h.base + "/health/live", timeout=5).status_code == 204
        assert h.post_events("after-fuzz", [{"eventId": str(uuid.uuid4()),
                                              "eventType": "T"}]).status_code == 201
    finally:
        session.close()
        h.session.close()
        h.node.stop()

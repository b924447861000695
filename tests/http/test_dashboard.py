"""The web dashboard (docs/operations.md, "Dashboard"): its files are served with the right
types, caching and security headers; and in headless Chromium against a 3-node cluster of
real processes (over http, and over https with the nodes' certificates pinned), the page
shows every member and an event appended after it loaded, browses a stream to the event's
JSON, and leaves a screenshot in the test's temp dir."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path

import pytest
import requests

from esnode.httpapi.dashboard import load_files
from tests.http.chromium import Chromium, chromium_binary
from tests.cluster.conftest import FAST
from tests.http.conftest import EVENTS


def test_the_page_and_its_files_are_served_from_the_package(http_node):
    page = http_node.get("/dashboard/", accept="text/html")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("dashboard.js", "dashboard.css"):
        assert f'"{name}"' in page.text
        assert http_node.get(f"/dashboard/{name}", accept="*/*").status_code == 200
    again = http_node.get("/dashboard/", headers={"If-None-Match": page.headers["ETag"]})
    assert again.status_code == 304 and not again.content
    assert http_node.get("/dashboard/nope.js").status_code == 404
    for path in ("/", "/dashboard"):
        r = http_node.session.get(http_node.url(path), allow_redirects=False, timeout=10)
        assert r.status_code == 307 and r.headers["Location"] == http_node.url("/dashboard/")
    behind = http_node.session.get(http_node.url("/"), allow_redirects=False, timeout=10,
                                   headers={"X-Forwarded-Host": "lb:2110",
                                            "X-Forwarded-Prefix": "/es"})
    assert behind.headers["Location"] == "http://lb:2110/es/dashboard/"
    assert set(load_files()) == {"index.html", "dashboard.js", "dashboard.css"}


@pytest.fixture
def browser(tmp_path):
    """``browser(*flags)`` starts a headless Chromium; every one started ends at teardown."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium); "
                    "the dashboard browser test needs it")
    started: list[Chromium] = []

    def start(*flags: str) -> Chromium:
        started.append(Chromium(tmp_path / f"browser{len(started)}", binary, flags))
        return started[-1].start()
    try:
        yield start
    finally:
        for one in started:
            one.close()


def spki_pins(certs: list[Path]) -> str:
    """Chromium's flag that trusts exactly these certificates' keys (base64 SHA-256 of each
    SubjectPublicKeyInfo): the browser checks the nodes' TLS without a system CA store."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pins = []
    for path in certs:
        key = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
        der = key.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        pins.append(base64.b64encode(hashlib.sha256(der).digest()).decode())
    return "--ignore-certificate-errors-spki-list=" + ",".join(pins)


def rows(table: str) -> str:
    return f"[...document.querySelectorAll('#{table} tbody tr')]"


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_dashboard_in_chromium_shows_members_and_a_fresh_event(make_http_cluster, browser,
                                                               tmp_path, tls):
    cluster = make_http_cluster(3, tls=tls, **FAST)
    cluster.start()
    leader = cluster.wait_for_leader(timeout=30, settled=True)
    certs = [cluster.ca.parent / f"{name}.crt" for name in cluster.names] if tls else []
    chromium = browser(spki_pins(certs)) if tls else browser()
    follower = next(n for n in cluster.names if n != leader)
    chromium.navigate(cluster.http(follower) + "/dashboard/")

    members = chromium.wait_for(
        f"(() => {{ const r = {rows('members')}; return r.length === 3 && "
        "r.some(x => x.textContent.includes('Leader')) && "
        "r.map(x => [x.dataset.name, x.cells[1].textContent]); })()",
        30, "three members, one of them the leader")
    assert dict(members)[leader] == "Leader", members
    links = chromium.evaluate("[...document.querySelectorAll('#members a')].map(a => a.href)")
    assert sorted(links) == sorted(cluster.http(n) + "/dashboard/" for n in cluster.names)
    assert chromium.wait_for(
        f"document.getElementById('node-name').textContent", 10, "the node's name") \
        == f"node {follower}"

    stream = f"dashboard-{uuid.uuid4().hex[:8]}"
    marker = f"fresh-{uuid.uuid4().hex[:8]}"
    r = requests.post(cluster.http(leader) + f"/streams/{stream}", timeout=15,
                      verify=str(cluster.ca) if tls else True,
                      headers={"Content-Type": EVENTS}, data=json.dumps(
                          [{"eventId": str(uuid.uuid4()), "eventType": "DashboardTested",
                            "data": {"marker": marker, "html": "<b>not markup</b>"}}]))
    assert r.status_code == 201, r.text
    chromium.wait_for(f"{rows('tail-events')}.some(r => r.dataset.stream === "
                      f"{json.dumps(stream)} && r.textContent.includes({json.dumps(marker)}))",
                      30, "the appended event in the live tail of $all")
    assert chromium.evaluate("document.querySelectorAll('#tail-events b').length") == 0

    chromium.evaluate(f"[...document.querySelectorAll('#streams li')].find("
                      f"li => li.dataset.stream === {json.dumps(stream)}).click()")
    chromium.wait_for(f"{rows('stream-events')}.length === 1 && "
                      f"{rows('stream-events')}[0].textContent.includes('DashboardTested')",
                      20, "the stream's page in the browser")
    chromium.evaluate(f"{rows('stream-events')}[0].click()")
    shown = chromium.wait_for("(() => { const p = document.getElementById('event-json'); "
                              "return !p.hidden && p.textContent; })()", 20, "the event's JSON")
    assert json.loads(shown)["data"] == {"marker": marker, "html": "<b>not markup</b>"}
    position = int(r.headers["ESnode-Position"])
    chromium.wait_for(f"(() => {{ const t = document.getElementById('total').textContent; "
                      f"const rate = document.getElementById('rate').textContent; "
                      f"return rate !== '–' && Number(t.replace(/,/g, '')) >= {position}; }})()",
                      20, "the throughput figures up to the appended event's log position")

    shot = chromium.screenshot(tmp_path / "dashboard.png")
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 20_000
    assert chromium.errors == [], chromium.errors

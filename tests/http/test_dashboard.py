"""The web dashboard (docs/operations.md, "Dashboard"): its files are served with the right
types, caching and security headers; and in headless Chromium against a 3-node cluster of
real processes, the page shows every member and an event appended after it loaded, browses a
stream to the event's JSON, and leaves a screenshot in the test's temp dir."""

from __future__ import annotations

import json
import uuid

import pytest

from esnode.httpapi.dashboard import load_files
from tests.http.chromium import Chromium, chromium_binary
from tests.http.test_cluster_http import post


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
def chromium(tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium); "
                    "the dashboard browser test needs it")
    browser = Chromium(tmp_path, binary)
    try:
        yield browser.start()
    finally:
        browser.close()


def rows(table: str) -> str:
    return f"[...document.querySelectorAll('#{table} tbody tr')]"


@pytest.mark.slow
def test_dashboard_in_chromium_shows_members_and_a_fresh_event(http_cluster, chromium,
                                                               tmp_path):
    cluster = http_cluster
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.names if n != leader)
    chromium.navigate(cluster.http(follower) + "/dashboard/")

    members = chromium.wait_for(
        f"(() => {{ const r = {rows('members')}; return r.length === 3 && "
        "r.some(x => x.textContent.includes('Leader')) && "
        "r.map(x => [x.dataset.name, x.cells[1].textContent]); })()",
        30, "three members, one of them the leader")
    assert dict(members)[leader] == "Leader", members
    assert chromium.wait_for(
        f"document.getElementById('node-name').textContent", 10, "the node's name") \
        == f"node {follower}"

    stream = f"dashboard-{uuid.uuid4().hex[:8]}"
    marker = f"fresh-{uuid.uuid4().hex[:8]}"
    r = post(cluster.http(leader) + f"/streams/{stream}",
             [{"eventId": str(uuid.uuid4()), "eventType": "DashboardTested",
               "data": {"marker": marker, "html": "<b>not markup</b>"}}])
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

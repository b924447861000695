"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for the
dashboard tests.

The browser listens on a port it picks itself (``--remote-debugging-port=0``, read back from
``DevToolsActivePort`` in its fresh profile directory, on 127.0.0.1 only); one websocket to the
page target (aiohttp's client, already a dependency) sends commands and collects the page's
uncaught exceptions and console errors. Waits poll a JavaScript condition until a deadline.
``close`` ends the browser, whatever state it is in.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.conftest import end_process

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "--window-size=1400,1100", "--hide-scrollbars"]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(AssertionError):
    pass


class Chromium:
    def __init__(self, workdir: Path, binary: str, extra_flags: tuple[str, ...] = ()):
        self.workdir = Path(workdir)
        self.binary = binary
        self.extra_flags = list(extra_flags)
        self.errors: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._ws = None
        self._ids = itertools.count(1)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> Chromium:
        profile = self.workdir / "chromium-profile"
        profile.mkdir(parents=True)
        self._log = open(self.workdir / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, *self.extra_flags, f"--user-data-dir={profile}",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrowserError(f"chromium did not open its DevTools port within "
                                   f"{timeout}s: {self.log_tail()}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self._run(self._connect(port, deadline))
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        return self

    async def _connect(self, port: int, deadline: float) -> None:
        self._session = aiohttp.ClientSession()
        while True:
            try:
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t.get("type") == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise BrowserError("chromium shows no page target")
            await asyncio.sleep(0.05)
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                                  max_msg_size=0)

    def close(self) -> None:
        try:
            if self._ws is not None:
                self._run(self._ws.close())
            if self._session is not None:
                self._run(self._session.close())
        except Exception:  # the browser may be gone already: it is ended below either way
            pass
        finally:
            self._loop.close()
            if self.proc is not None:
                end_process(self.proc)
            if getattr(self, "_log", None) is not None:
                self._log.close()

    def log_tail(self, chars: int = 2000) -> str:
        path = self.workdir / "chromium.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # --- the protocol ---------------------------------------------------------------------
    def _run(self, coroutine):
        return self._loop.run_until_complete(coroutine)

    def send(self, method: str, timeout: float = 30.0, **params) -> dict:
        """One DevTools command; its result. Events read meanwhile are checked for errors."""
        return self._run(self._send(method, params, timeout))

    async def _send(self, method: str, params: dict, timeout: float) -> dict:
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"no answer to {method} within {timeout}s")
            msg = await self._ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise BrowserError(f"the DevTools connection closed ({msg.type.name}) during "
                                   f"{method}: {self.log_tail()}")
            data = json.loads(msg.data)
            if data.get("id") == ident:
                if "error" in data:
                    raise BrowserError(f"{method}: {data['error']}")
                return data.get("result", {})
            self._note(data)

    def _note(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + details.get("exception", {}).get(
                "description", details.get("text", "?")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")

    # --- what tests use -------------------------------------------------------------------
    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: "
                               f"{result['exceptionDetails'].get('exception', {})}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        """Poll ``expression`` until it is truthy; its value. Fails after ``timeout`` with
        what the page's status line said."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                status = self.evaluate("(document.getElementById('status') || {}).textContent")
                raise BrowserError(f"timed out after {timeout}s waiting for {what}; page "
                                   f"status: {status!r}; errors: {self.errors}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        """The whole page (not just the window) as a PNG file."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip=clip)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

"""Start the example load balancers (examples/haproxy.cfg, examples/nginx.conf) from their
Debian binaries in front of a test cluster: the shipped config with the test's ports put in
for the shipped ones, nothing else changed. A test skips, saying how to install the binary,
when it is absent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import end_process, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
SHIPPED_HTTP_PORTS = {"node1": 2115, "node2": 2125, "node3": 2135}
INSTALL = {"haproxy": "apt-get install -y haproxy", "nginx": "apt-get install -y nginx"}


def require(binary: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/local/sbin/{binary}") if Path(p).exists()),
        None)
    if path is None:
        pytest.skip(f"{binary} is not installed: it is a Debian package "
                    f"(`{INSTALL[binary]}`, which .ci/run does for CI)")
    return path


SHIPPED = {"haproxy": ("haproxy.cfg", 2110), "nginx": ("nginx.conf", 2111),
           "haproxy-tls": ("haproxy-tls.cfg", 2112)}
"""Each example: its file and its frontend port."""


class Balancer:
    """One balancer process in front of ``http_ports`` (node -> port); ``url`` is its
    frontend. ``stop()`` ends it (also on a failed start). ``haproxy-tls`` needs ``certs``: a
    folder with the cluster's ``ca.crt`` and the balancer's ``lb.pem``."""

    def __init__(self, kind: str, http_ports: dict[str, int], workdir: Path,
                 certs: Path | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        self.dir = workdir / kind
        self.dir.mkdir(parents=True, exist_ok=True)
        binary = require(kind.split("-")[0])
        shipped = SHIPPED[kind]
        self.session = requests.Session()
        text = (REPO / "examples" / shipped[0]).read_text()
        if certs is not None:
            text = text.replace(" certs/", f" {certs}/")
            self.session.trust_env = False  # else REQUESTS_CA_BUNDLE wins over verify
            self.session.verify = str(certs / "ca.crt")
        text = text.replace(f"127.0.0.1:{shipped[1]}", f"127.0.0.1:{self.port}")
        for node, port in http_ports.items():
            text = text.replace(f"127.0.0.1:{SHIPPED_HTTP_PORTS[node]}", f"127.0.0.1:{port}")
        config = self.dir / shipped[0]
        config.write_text(text)
        if binary.endswith("haproxy"):
            cmd = [binary, "-f", str(config), "-db"]
        else:
            cmd = [binary, "-p", str(self.dir), "-c", str(config)]
        self.log = open(self.dir / "stderr", "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, cwd=self.dir)
        self.url = f"{'https' if certs else 'http'}://127.0.0.1:{self.port}"
        try:
            wait_for(self._serving, 15, message=f"{kind} serving on {self.url}")
        except BaseException:
            self.stop()
            raise

    def _serving(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.kind} exited: {(self.dir / 'stderr').read_text()}")
        try:
            return self.session.get(self.url + "/ping", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        end_process(self.proc)
        self.log.close()
        self.session.close()

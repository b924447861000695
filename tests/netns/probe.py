"""Small network probes run inside a node's namespace (``ip netns exec NS python probe.py ...``).

Modes (each prints one JSON line on stdout):

- ``tcp HOST PORT TIMEOUT``: can a TCP connection be opened? ``{"connected": bool, "error": ...}``
- ``udp-listen PORT TIMEOUT``: print ``ready``, then the first datagram received (or none)
- ``udp-send HOST PORT TEXT``: send one datagram (errors printed, never raised)
- ``request HOST PORT OP ARGS_JSON TIMEOUT``: one client-protocol request with a bare DEALER:
  ``{"reply": [corr, kind, body]}`` or ``{"reply": null}`` on timeout
"""

from __future__ import annotations

import json
import socket
import sys


def tcp(host: str, port: str, timeout: str) -> dict:
    try:
        with socket.create_connection((host, int(port)), timeout=float(timeout)):
            return {"connected": True, "error": None}
    except OSError as exc:
        return {"connected": False, "error": f"{type(exc).__name__}: {exc}"}


def udp_listen(port: str, timeout: str) -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", int(port)))
        s.settimeout(float(timeout))
        print("ready", flush=True)
        try:
            data, peer = s.recvfrom(4096)
        except OSError:
            return {"received": None}
        return {"received": data.decode(), "from": peer[0]}


def udp_send(host: str, port: str, text: str) -> dict:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(text.encode(), (host, int(port)))
            return {"sent": True, "error": None}
        except OSError as exc:
            return {"sent": False, "error": f"{type(exc).__name__}: {exc}"}


def request(host: str, port: str, op: str, args: str, timeout: str) -> dict:
    import msgpack
    import zmq

    from esnode.transport.codec import encode_request

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{host}:{port}")
    try:
        sock.send(encode_request(op, 7, json.loads(args)))
        if not sock.poll(int(float(timeout) * 1000)):
            return {"reply": None}
        reply = msgpack.unpackb(sock.recv(), raw=False)
        return {"reply": json.loads(json.dumps(reply, default=repr))}
    finally:
        sock.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    modes = {"tcp": tcp, "udp-listen": udp_listen, "udp-send": udp_send, "request": request}
    print(json.dumps(modes[sys.argv[1]](*sys.argv[2:])), flush=True)

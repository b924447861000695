"""Fuzz a live node over its sockets, the run whose counts docs/security.md reports:

    .venv/bin/python -m esnode.bench.fuzz_node --inputs 1000000
    .venv/bin/python -m esnode.bench.fuzz_node --flood 1000000 --clients 1   # memory budget

Starts one node (LMDB, its own process) from a temporary topology; sends ``--inputs``
mutated frames to its external socket (several connections, multi-frame messages too) and
as many mutated cluster frames to its internal socket, while a client appends events and
records each acknowledgement. Every 50,000 inputs the node must answer a ping within 5 s (no
hang); at the end every acknowledged event must be readable (no loss), the process must be
alive (no crash), and the node's log and peak memory are reported. Exit code 1 on a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import msgpack
import zmq

from esnode.core.cluster_messages import WIRE_MESSAGES
from esnode.core.forwarding import FORWARD_MESSAGES
from esnode.transport.codec import CLIENT_OPS, CLUSTER_MAGIC, encode_request
from esnode.transport.ports import free_port

CHECK_EVERY = 50_000


def _event() -> list:
    return [str(uuid.uuid4()), "Fuzz", b'{"a":1}', b"", True]


def client_seeds() -> list[bytes]:
    """One valid request per operation: the mutations start from the real grammar."""
    args = {"append": {"stream": "s", "events": [_event()]}, "read_stream": {"stream": "s"},
            "read_all": {}, "delete": {"stream": "d"}, "get_metadata": {"stream": "s"},
            "set_metadata": {"stream": "s", "metadata": {"$maxCount": 3}},
            "subscribe": {"stream": "s", "credit": 5}, "credit": {"subscription": 1, "n": 5},
            "unsubscribe": {"subscription": 1}, "cluster_info": {}, "ping": {},
            "create_group": {"stream": "s", "group": "g", "settings": {}},
            "update_group": {"stream": "s", "group": "g", "settings": {}},
            "delete_group": {"stream": "s", "group": "g"}, "list_groups": {"stream": "s"},
            "group_info": {"stream": "s", "group": "g"},
            "connect_group": {"stream": "s", "group": "g", "credit": 5},
            "group_ack": {"subscription": 1, "positions": [0, 1]},
            "group_nack": {"subscription": 1, "positions": [0], "action": "park",
                           "reason": "fuzz"},
            "leave_group": {"subscription": 1},
            "replay_parked": {"stream": "s", "group": "g", "max_count": 5}}
    return [encode_request(op, i, args.get(op, {})) for i, op in enumerate(CLIENT_OPS)]


def cluster_seeds(rng: random.Random) -> list[bytes]:
    """Each cluster message's envelope with the right number of (random) fields."""
    seeds = []
    for cls in WIRE_MESSAGES + FORWARD_MESSAGES:
        n = len(dataclasses.fields(cls))
        seeds.append(msgpack.packb([CLUSTER_MAGIC, 1, cls.__name__,
                                    [_value(rng, 2) for _ in range(n)]], use_bin_type=True))
    return seeds


def _value(rng: random.Random, depth: int):
    kind = rng.randrange(9 if depth else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 2**31, 2**63 - 1, -2**63, rng.randrange(-10**6, 10**6)])
    if kind == 3:
        return rng.choice(["", "node1", "node2", "$all", "s", "x" * rng.randrange(300)])
    if kind == 4:
        return rng.randbytes(rng.randrange(40))
    if kind == 5:
        return rng.random() * 1e9
    if kind in (6, 7):
        return [_value(rng, depth - 1) for _ in range(rng.randrange(5))]
    return {str(_value(rng, 0)): _value(rng, depth - 1) for _ in range(rng.randrange(4))}


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    """A seed, bent: bit flips, truncation, splices, inserted junk or msgpack headers, or a
    fresh random structure."""
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[pos % len(data)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[pos:]
        elif op == 2:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 16))
        elif op == 3:
            data[pos:pos] = rng.choice([b"\xdc\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc1",
                                        b"\xdb\xff\xff\xff\xff", b"\x91" * 100, b"\xcf" + b"\xff" * 8])
        elif op == 4:
            other = rng.choice(seeds)
            data[pos:] = other[rng.randrange(len(other) + 1):]
        elif op == 5:
            data = bytearray(msgpack.packb(_value(rng, 3), use_bin_type=True))
        elif op == 6 and data:
            data[pos % len(data)] = rng.randrange(256)
    return bytes(data)


class Writer(threading.Thread):
    """Appends one event at a time and remembers which were acknowledged."""

    def __init__(self, endpoint: str):
        super().__init__(name="fuzz-writer", daemon=True)
        self.endpoint, self.acked, self.failed = endpoint, [], 0
        self.stop = threading.Event()

    def run(self) -> None:
        from esnode.client import EsError, connect, new_event

        with connect(self.endpoint, operation_timeout=5.0) as client:
            while not self.stop.is_set():
                event = new_event("Acked", {"n": len(self.acked)})
                try:
                    client.append("fuzz-acked", event)
                    self.acked.append(event.event_id)
                except EsError:
                    self.failed += 1
                self.stop.wait(0.002)


def _drain(sockets: list[zmq.Socket]) -> int:
    """Read every answer waiting; how many there were."""
    n = 0
    for sock in sockets:
        try:
            while True:
                sock.recv(zmq.NOBLOCK)
                n += 1
        except zmq.Again:
            pass
    return n


def ping(ctx: zmq.Context, endpoint: str, timeout: float = 5.0) -> float:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        started = time.monotonic()
        sock.send(encode_request("ping", 1, {}))
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"the node did not answer a ping within {timeout}s")
        sock.recv()
        return time.monotonic() - started
    finally:
        sock.close()


def fuzz_socket(ctx, endpoint: str, seeds, inputs: int, rng, external: str,
                routing_id: bytes = b"", connections: int = 4) -> dict:
    socks = []
    for i in range(connections):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 1000)
        if routing_id:
            s.setsockopt(zmq.ROUTING_ID, routing_id + str(i).encode())
        s.connect(endpoint)
        socks.append(s)
    sent = multi = pings = answered = 0
    worst_ping = 0.0
    started = time.monotonic()
    while sent < inputs:
        sock = socks[sent % connections]
        frame = mutate(rng, seeds)
        try:
            if rng.randrange(50) == 0:
                sock.send_multipart([frame] + [rng.randbytes(3)] * rng.randrange(1, 20),
                                    zmq.NOBLOCK)
                multi += 1
            else:
                sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            answered += _drain(socks)
            continue
        sent += 1
        if sent % 256 == 0:
            answered += _drain(socks)
        if sent % CHECK_EVERY == 0:
            worst_ping = max(worst_ping, ping(ctx, external))
            pings += 1
    # Every input gets at most one answer (most get exactly one, an error): wait until they
    # stop coming, so the count is of inputs the node actually read.
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 2.0:
        got = _drain(socks)
        answered += got
        if got:
            quiet_since = time.monotonic()
        else:
            time.sleep(0.05)
    worst_ping = max(worst_ping, ping(ctx, external))
    for s in socks:
        s.close()
    return {"endpoint": endpoint, "inputs_sent": sent, "answers": answered,
            "multi_frame": multi, "liveness_pings": pings + 1,
            "worst_ping_s": round(worst_ping, 3), "seconds": round(time.monotonic() - started, 1)}


def peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("VmHWM"))) // 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(ctx, external: str, clients: int, appends: int, pid: int) -> dict:
    """``clients`` connections each pipeline ``appends`` one-event appends and never read an
    answer: what the in-flight bound and the high-water marks must contain."""
    socks = []
    for _ in range(clients):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)  # the client side queues without limit: the worst case
        s.connect(external)
        socks.append(s)
    started = time.monotonic()
    frame = encode_request("append", 1, {"stream": "flood", "events": [_event()]})
    for i in range(appends):
        for s in socks:
            s.send(frame)
        if i % CHECK_EVERY == 0 and i:
            ping(ctx, external, 10.0)
    worst = ping(ctx, external, 10.0)  # the node still serves someone else
    # The node reads at its own pace: keep the connections open until it has read all it
    # will (its CPU goes quiet), so the peak memory is the peak of the whole flood.
    deadline, last = time.monotonic() + 600, cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - last < 0.1:
            break
        last = now
    worst = max(worst, ping(ctx, external, 10.0))
    seconds = time.monotonic() - started
    for s in socks:
        s.close()
    return {"clients": clients, "appends_per_client": appends,
            "ping_after_flood_s": round(worst, 3), "seconds": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="fuzzed frames per socket")
    parser.add_argument("--flood", type=int, default=0, metavar="N",
                        help="instead: pipeline N appends per client, never reading answers, "
                             "and report the node's peak memory")
    parser.add_argument("--clients", type=int, default=1, help="flooding clients (--flood)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the node's folder")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="esnode-fuzz-"))
    ext, internal = free_port(), free_port()
    (root / "topology.toml").write_text(
        f'[cluster]\nname = "fuzz"\nsize = 1\n[[nodes]]\nname = "node1"\ndata_dir = "data"\n'
        f'log_dir = "logs"\ninternal_host = "127.0.0.1"\ninternal_port = {internal}\n'
        f'external_host = "127.0.0.1"\nexternal_port = {ext}\n')
    proc = subprocess.Popen([sys.executable, "-m", "esnode.cli", "run", "--config",
                             str(root / "topology.toml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    report: dict = {"seed": args.seed}
    failures: list[str] = []
    writer = None
    external = f"tcp://127.0.0.1:{ext}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ping(ctx, external, 1.0)
                break
            except TimeoutError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
        if args.flood:
            report["flood"] = flood(ctx, external, args.clients, args.flood, proc.pid)
        else:
            writer = Writer(external)
            writer.start()
            report["external"] = fuzz_socket(ctx, external, client_seeds(), args.inputs, rng,
                                             external)
            report["internal"] = fuzz_socket(ctx, f"tcp://127.0.0.1:{internal}",
                                             cluster_seeds(rng), args.inputs, rng, external,
                                             routing_id=b"node")
    except (TimeoutError, zmq.ZMQError) as exc:
        failures.append(f"hang or error: {exc}")
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join(10)
        try:
            if proc.poll() is not None:
                failures.append(f"the node exited with code {proc.returncode}")
            else:
                report["node_peak_rss_mb"] = peak_rss_mb(proc.pid)
                if writer is not None:
                    check_acked(external, writer, report, failures)
        finally:
            proc.terminate()
            proc.wait(30)
            ctx.destroy(linger=0)
    log = root / "logs" / "node1.log"
    if log.exists():
        report["node_log_lines"] = sum(1 for _ in log.open(errors="replace"))
        report["node_log_bytes"] = log.stat().st_size
    report["failures"] = failures
    print(json.dumps(report, indent=2))
    if not args.keep:
        import shutil
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"kept {root}", file=sys.stderr)
    return 1 if failures else 0


def check_acked(external: str, writer: Writer, report: dict, failures: list[str]) -> None:
    """Every acknowledged event must be readable."""
    from esnode.client import EsError, connect

    try:
        with connect(external, operation_timeout=30.0) as client:
            stored = {e.event_id for e in client.iter_stream("fuzz-acked")}
    except EsError as exc:
        failures.append(f"could not read back the acknowledged writes: {exc}")
        return
    lost = [i for i in writer.acked if i not in stored]
    report.update(acked_writes=len(writer.acked), acked_writes_lost=len(lost),
                  writes_failed=writer.failed)
    if lost:
        failures.append(f"{len(lost)} acknowledged writes lost")


if __name__ == "__main__":
    sys.exit(main())

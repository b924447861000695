"""Ceiling of the chosen stack on the standard workload: a ~150-line single-node
"event store" made of pyzmq (ROUTER) + msgpack + LMDB, no pykka, no replication, no
error handling to speak of.  NOT the product: an anchor for what the bare stack can do
in one Python server process, so that the product's overhead can be read off later.

usage: python stack_ceiling.py [seconds_per_phase] [max_group] [phases, e.g. d]

Server (child process): one thread.  It blocks for one request, then drains every
request already queued (up to max_group, default 1000) and applies all the appends in
ONE LMDB write transaction (sync=True, metasync=True: durable at commit) -> group
commit.  Each append is checked against its stream's current version (expected-version
check) before it is written; a failed check fails that append only.
  log  db: 8-byte position -> msgpack [stream, version, event_id, type, data, metadata]
  idx  db: stream + 0x00 + 8-byte version -> position
  head db: stream -> last version
Reads are answered from a read transaction; the log values are sent as they are stored
(a msgpack array header + the concatenated values), so the server re-encodes nothing.

Client (this process): one DEALER socket.  Phase b: C asyncio tasks over one
zmq.asyncio DEALER (replies matched by request id), and also a pipelined variant.
max_group=1 turns group commit off (one commit per append) for comparison.
"""

import asyncio
import multiprocessing as mp
import os
import struct
import sys

import lmdb
import msgpack
import zmq
import zmq.asyncio

from workload import Runner


def fresh_dir(name):
    """An empty data folder under the system's temp dir (BENCH_DATA to choose another)."""
    import os
    import shutil
    import tempfile

    d = os.path.join(os.environ.get("BENCH_DATA", os.path.join(tempfile.gettempdir(),
                                                               "bench-data")), name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d

Q = struct.Struct(">Q")
ENDPOINT = os.environ.get("STACK_CEILING_ENDPOINT", "tcp://127.0.0.1:25900")
"""Where the server binds; ``esnode bench --ceiling`` picks a free port, so runs never meet."""


def _array_header(n):
    if n < 16:
        return bytes([0x90 | n])
    if n < 65536:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def serve(path, endpoint, max_group, ready):
    env = lmdb.open(path, map_size=16 << 30, max_dbs=4, sync=True, metasync=True)
    log_db = env.open_db(b"log")
    idx_db = env.open_db(b"idx")
    head_db = env.open_db(b"head")
    heads = {}
    with env.begin(db=log_db) as txn:
        cur = txn.cursor()
        next_pos = Q.unpack(cur.key())[0] + 1 if cur.last() else 0
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind(endpoint)
    ready.set()
    packb, unpackb = msgpack.packb, msgpack.unpackb
    running = True
    while running:
        batch = [sock.recv_multipart()]
        while len(batch) < max_group:
            try:
                batch.append(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        out = []
        writes = []
        for ident, payload in batch:
            req = unpackb(payload)
            op = req[0]
            if op == "a":
                writes.append((ident, req))
            elif op == "rs":  # read stream: rid, stream, from_version, count
                _, rid, stream, frm, count = req
                vals = []
                prefix = stream.encode() + b"\0"
                with env.begin() as txn:
                    c = txn.cursor(db=idx_db)
                    if c.set_range(prefix + Q.pack(frm)):
                        for k, pos in c:
                            if not k.startswith(prefix) or len(vals) >= count:
                                break
                            vals.append(txn.get(pos, db=log_db))
                out.append([ident, packb([rid, 0, len(vals)]), _array_header(len(vals)) + b"".join(vals)])
            elif op == "ra":  # read all: rid, from_position, count
                _, rid, frm, count = req
                vals = []
                with env.begin() as txn:
                    c = txn.cursor(db=log_db)
                    if c.set_range(Q.pack(frm)):
                        for _k, v in c:
                            vals.append(v)
                            if len(vals) >= count:
                                break
                out.append([ident, packb([rid, 0, len(vals)]), _array_header(len(vals)) + b"".join(vals)])
            elif op == "reset":
                with env.begin(write=True) as txn:
                    for db in (log_db, idx_db, head_db):
                        txn.drop(db, delete=False)
                heads.clear()
                next_pos = 0
                out.append([ident, packb([req[1], 0, 0])])
            elif op == "stop":
                out.append([ident, packb([req[1], 0, 0])])
                running = False
        if writes:
            replies = []
            with env.begin(write=True) as txn:
                for ident, (_, rid, stream, expected, events) in writes:
                    sb = stream.encode()
                    cur = heads.get(stream)
                    if cur is None:
                        h = txn.get(sb, db=head_db)
                        cur = Q.unpack(h)[0] - 1 if h else -1
                    if cur != expected:
                        replies.append([ident, packb([rid, 1, cur])])  # wrong expected version
                        continue
                    for ev in events:
                        cur += 1
                        txn.put(Q.pack(next_pos), packb([stream, cur, *ev]), append=True, db=log_db)
                        txn.put(sb + b"\0" + Q.pack(cur), Q.pack(next_pos), db=idx_db)
                        next_pos += 1
                    txn.put(sb, Q.pack(cur + 1), db=head_db)
                    heads[stream] = cur
                    replies.append([ident, packb([rid, 0, cur])])
            # the with-block committed (and fsynced) before any reply goes out
            out.extend(replies)
        for frames in out:
            sock.send_multipart(frames)
    sock.close()
    ctx.term()
    env.close()


def _wire(events):
    return [[e["event_id"], e["event_type"], e["data"], e["metadata"]] for e in events]


class StackAdapter:
    def __init__(self, endpoint=ENDPOINT):
        self.endpoint = endpoint
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.connect(endpoint)
        self.rid = 0

    def _call(self, req):
        self.rid += 1
        req[1] = self.rid
        self.sock.send(msgpack.packb(req))
        frames = self.sock.recv_multipart()
        head = msgpack.unpackb(frames[0])
        assert head[0] == self.rid
        return head, frames

    def reset(self):
        self._call(["reset", 0])

    def append(self, stream, expected, events):
        head, _ = self._call(["a", 0, stream, expected, _wire(events)])
        if head[1] != 0:
            raise RuntimeError("wrong expected version: current %d" % head[2])
        return head[2]

    def append_pipelined(self, reqs):
        base = self.rid
        for i, (s, exp, evs) in enumerate(reqs):
            self.sock.send(msgpack.packb(["a", base + 1 + i, s, exp, _wire(evs)]))
        self.rid += len(reqs)
        out = {}
        for _ in reqs:
            head = msgpack.unpackb(self.sock.recv_multipart()[0])
            assert head[1] == 0
            out[head[0]] = head[2]
        return [out[base + 1 + i] for i in range(len(reqs))]

    def read_stream(self, stream, page):
        n = 0
        frm = 0
        while True:
            head, frames = self._call(["rs", 0, stream, frm, page])
            evs = msgpack.unpackb(frames[1])
            n += len(evs)
            if len(evs) < page:
                return n
            frm = evs[-1][1] + 1

    def read_all(self, page, limit):
        n = 0
        frm = 0
        while n < limit:
            head, frames = self._call(["ra", 0, frm, page])
            evs = msgpack.unpackb(frames[1])
            n += len(evs)
            if len(evs) < page:
                break
            frm += len(evs)
        return n

    # async side: many tasks share one DEALER; a reader task resolves futures by rid
    async def aopen(self, c):
        self.actx = zmq.asyncio.Context()
        self.asock = self.actx.socket(zmq.DEALER)
        self.asock.setsockopt(zmq.SNDHWM, 0)
        self.asock.setsockopt(zmq.RCVHWM, 0)
        self.asock.connect(self.endpoint)
        self.pending = {}
        self.arid = 10**9
        self.reader = asyncio.create_task(self._reader())

    async def _reader(self):
        while True:
            frames = await self.asock.recv_multipart()
            head = msgpack.unpackb(frames[0])
            self.pending.pop(head[0]).set_result(head)

    async def aappend(self, k, stream, expected, events):
        self.arid += 1
        rid = self.arid
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.asock.send(msgpack.packb(["a", rid, stream, expected, _wire(events)]))
        head = await fut
        if head[1] != 0:
            raise RuntimeError("wrong expected version")
        return head[2]

    async def aclose(self):
        self.reader.cancel()
        try:
            await self.reader
        except asyncio.CancelledError:
            pass
        self.asock.close()
        self.actx.term()

    def close(self):
        self._call(["stop", 0])
        self.sock.close()
        self.ctx.term()


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    max_group = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    phases = sys.argv[3] if len(sys.argv) > 3 else "abcd"
    mp.set_start_method("fork")
    path = fresh_dir("stack-lmdb")
    ready = mp.Event()
    p = mp.Process(target=serve, args=(path, ENDPOINT, max_group, ready), daemon=True)
    p.start()
    ready.wait(10)
    try:
        label = "stack_zmq_lmdb" + ("" if max_group > 1 else "_nogroup")
        Runner(StackAdapter(), label, seconds=seconds).run(phases)
    finally:
        p.join(10)
        if p.is_alive():
            p.terminate()


if __name__ == "__main__":
    main()

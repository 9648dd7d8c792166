"""D5 on real CPython: two concurrent calls on one upstream PipeChannel
(pkg/, transport_pipe.py at 13277138 verbatim) to a worker that never
answers, same timeout (0.3 s), started together as two clients would.
Does the second call (waiting for _recv_lock) start a conn.recv() read
after the first's timeout releases the lock? Counts the reads started."""
import asyncio, os, sys, threading, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pkg"))
from lilbee.providers.worker.transport_pipe import PipeSpawner
from cfg import Cfg

def worker_main(conn, abort, cfg):
    while True:
        k, p = conn.recv()
        if k == "shutdown":
            return

class Proxy:
    def __init__(self, c): self.c = c; self.reads = 0
    def recv(self):
        self.reads += 1
        return self.c.recv()
    def __getattr__(self, n): return getattr(self.c, n)

async def main():
    ch, _ = PipeSpawner().spawn(worker_main, Cfg("embed", "x"))
    await asyncio.sleep(1.0)
    ch._conn = px = Proxy(ch._conn)
    async def one(p):
        try:
            return await ch.call("req", p, timeout=0.3)
        except asyncio.TimeoutError:
            return "TimeoutError"
    r = await asyncio.gather(one("A"), one("B"))
    await asyncio.sleep(0.1)
    print(sys.version.split()[0], r, "reads started:", px.reads, flush=True)
    ch._process.terminate()
    os._exit(0)

if __name__ == "__main__":
    asyncio.run(main())

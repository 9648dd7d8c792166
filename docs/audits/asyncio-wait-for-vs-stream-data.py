"""asyncio StreamReader data that arrives while the loop is stalled (as a
SIGSTOP of the process stalls it) past a wait_for deadline: which wins?
The shape of joinmarket-ng's `asyncio.wait_for(connection.receive(),
timeout=...)` reads (see docs/models/lilbee.md, "A reply that comes as the
deadline passes", on the other models).

    python3 docs/audits/asyncio-wait-for-vs-stream-data.py

3.11.7: data wins b'hello\n'
3.12.1, 3.13.0: TimeoutError; the line stays in the reader's buffer
"""
import asyncio, socket, sys, time
async def main():
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=a)
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    def stall():
        b.sendall(b"hello\n")      # data arrives while the loop is stalled
        time.sleep(0.9 - (time.monotonic() - t0))
    loop.call_later(0.05, stall)
    try:
        line = await asyncio.wait_for(reader.readline(), timeout=0.6)
        print(sys.version.split()[0], "data wins", line)
    except asyncio.TimeoutError:
        print(sys.version.split()[0], "TimeoutError; buffered:", reader._buffer)
asyncio.run(main())

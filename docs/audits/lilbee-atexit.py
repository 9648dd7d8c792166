# heartsim, docs/models/lilbee.md "The parent's clean exit": run with python3 (3.11 on Linux).
# Expected output:
#   idle parent: exited rc=0 | child: gone -
#   blocked parent: still running after 5 s (blocked at exit) | child: alive S
# Probe: what a clean interpreter exit does to a spawn-context daemonic worker
# (PipeSpawner(daemon=True)) with and without an executor thread blocked in conn.recv().
import multiprocessing as mp, sys, time, os, subprocess, signal

def hang(conn):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        time.sleep(1)

def parent(blocked):
    from concurrent.futures import ThreadPoolExecutor
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe(duplex=True)
    p = ctx.Process(target=hang, args=(b,), daemon=True)
    p.start(); b.close()
    print("child", p.pid, flush=True)
    ex = ThreadPoolExecutor(max_workers=2)
    if blocked:
        ex.submit(a.recv)
        time.sleep(0.2)
    ex.shutdown(wait=False, cancel_futures=True)
    # main returns: threading._shutdown, then atexit

if __name__ == "__main__":
    if len(sys.argv) > 1:
        parent(sys.argv[1] == "blocked"); sys.exit(0)
    for mode in ["idle", "blocked"]:
        pr = subprocess.Popen([sys.executable, __file__, mode], stdout=subprocess.PIPE, text=True)
        pid = int(pr.stdout.readline().split()[1])
        try:
            rc = pr.wait(timeout=5); parent_state = f"exited rc={rc}"
        except subprocess.TimeoutExpired:
            parent_state = "still running after 5 s (blocked at exit)"
        try:
            os.kill(pid, 0); child = "alive"
        except ProcessLookupError:
            child = "gone"
        # reap zombie check
        st = open(f"/proc/{pid}/stat").read().split()[2] if os.path.exists(f"/proc/{pid}/stat") else "-"
        print(mode, "parent:", parent_state, "| child:", child, st)
        pr.kill(); pr.wait()
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass

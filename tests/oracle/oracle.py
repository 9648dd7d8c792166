"""The differential oracle (docs/oracle.md): run heartsim scenarios through
the Rust model (`heartsim run`) and through the real upstream code (a
runner per upstream system), and compare their decision records exactly:
time, kind, node, peer and reason.

    python tests/oracle/oracle.py --heartsim target/debug/heartsim FILE...
    python tests/oracle/oracle.py --heartsim BIN --fuzz 200 --seed 2026112721
    python tests/oracle/oracle.py --heartsim BIN --jsonl FILE   # upstream's records

Exit status: 0 every scenario agrees, 1 a difference (the first is printed
with the command that replays it), 2 bad input or a harness error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import shutil
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor

from vworld import Unsupported

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# One runner per upstream system: the model it checks, its module, and
# the record kinds it produces (the model's decision records; the engine's
# fault records are inputs, not compared).
RUNNERS = {
    "kstlib": (
        "kstlib_runner",
        {
            "beat", "beat-landed-after-stop", "missed-beat", "target-dead", "alert",
            "callback-failed", "loop-died",
            "start-error", "alive", "dead", "fired", "rearmed", "watchdog-reset",
        },
    ),
    "decnet": (
        "decnet_runner",
        {
            "beat", "beat-rejected", "beat-failed", "not-started", "heartbeat", "host-row",
            "lifecycle-row", "shard-row", "resync", "worker-status", "bus", "probe",
            "operator", "self-destruct", "operation-started", "operation-done", "push",
            "push-rejected", "push-failed",
        },
    ),
}

FIELDS = ("t_us", "node", "kind", "peer", "reason")


def key(r: dict) -> tuple:
    """What must agree; for a beat that landed, also the timestamp it wrote (msg)."""
    k = tuple(r.get(f) for f in FIELDS)
    return k + (r.get("msg"),) if r["kind"] in ("beat", "beat-landed-after-stop") else k


def ordered(records: list[dict]) -> list[dict]:
    """By time, then what each record says: the records of one instant are
    compared as a set. Upstream gives them no order: two nodes' threads
    race, and so do one node's tasks at one instant (two requests that
    arrive together, `asyncio.gather`ed probes)."""
    return sorted(
        records,
        key=lambda r: (r["t_us"], r["node"], r.get("peer") or "", r["kind"], r.get("reason") or "", r.get("msg") or ""),
    )


def show(r: dict | None) -> str:
    if r is None:
        return "<none>"
    t = r["t_us"]
    s = f"{t // 3_600_000_000}:{t // 60_000_000 % 60:02}:{t // 1_000_000 % 60:02}.{t % 1_000_000:06}"
    return f"{s}  {r['node']:<8} {r['kind']:<14} {r.get('peer') or '':<8} {r.get('reason') or ''}  ({r.get('msg') or ''})"


def model_records(heartsim: str, path: str, kinds: set[str]) -> list[dict]:
    p = subprocess.run(
        [heartsim, "run", path, "--format", "jsonl", "--decisions"],
        capture_output=True,
        text=True,
    )
    if p.returncode not in (0, 1):
        raise RuntimeError(f"heartsim run {path} exited {p.returncode}: {p.stderr.strip()}")
    out = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return [r for r in out if r["kind"] in kinds]


def check(heartsim: str, path: str, replay: str) -> tuple[str, str]:
    """("ok" | "differ" | "skip" | "error", report); a difference's report
    starts its second part with the upstream side's key after `@@`."""
    with open(path, "rb") as f:
        model = tomllib.load(f)["scenario"]["model"]
    if model not in RUNNERS:
        return "skip", f"{path}: no oracle for model {model!r}"
    module, kinds = RUNNERS[model]
    runner = __import__(module)
    try:
        want = ordered(model_records(heartsim, path, kinds))
        got, noted = runner.run(path)
        got = ordered(got)
        status, report = compare(want, got, path, replay)
        if status == "differ" and noted:
            # Known model simplifications mattered: the difference is known
            # only if the harness, doing what the model does there, agrees.
            again, _ = runner.run(path, as_the_model=True)
            if compare(want, ordered(again), path, replay)[0] == "ok":
                why = "; ".join(runner.KNOWN[k] for k in sorted(noted))
                text, _, upstream = report.partition("@@")
                note = f"\n  known difference ({', '.join(sorted(noted))}): {why}; the harness agrees when it does what the model does"
                return "known", f"{text}{note}@@{upstream}"
        return status, report
    except Unsupported as e:
        return "skip", f"{path}: the {model} runner cannot run this scenario: {e}"
    except Exception as e:  # noqa: BLE001 - a harness error names the file
        import traceback

        return "error", f"{path}: {type(e).__name__}: {e}\n{traceback.format_exc()}\n  replay: {replay} {path}"


def compare(want: list[dict], got: list[dict], path: str, replay: str) -> tuple[str, str]:
    for i in range(max(len(want), len(got))):
        a = want[i] if i < len(want) else None
        b = got[i] if i < len(got) else None
        if a is None or b is None or key(a) != key(b):
            ctx = "\n".join("    " + show(r) for r in want[max(0, i - 3) : i])
            return "differ", (
                f"{path}: the model and upstream differ at decision record {i + 1}"
                f" (of {len(want)} model, {len(got)} upstream):\n"
                f"  before it (both):\n{ctx or '    <nothing>'}\n"
                f"  model:    {show(a)}\n"
                f"  upstream: {show(b)}\n"
                f"  replay: {replay} {path}"
                f"@@{' '.join(str(x) for x in key(b)) if b else '<none>'}"
            )
    return "ok", f"{path}: {len(want)} decision records agree"


def _check_one(args):
    heartsim, path, replay = args
    return path, check(heartsim, path, replay)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--heartsim", required=True, help="the heartsim binary")
    ap.add_argument("--fuzz", type=int, metavar="N", help="also N generated cases (heartsim fuzz --emit)")
    ap.add_argument("--model", default="kstlib", help="the model whose generator --fuzz uses")
    ap.add_argument("--seed", type=int, default=0, help="the generator's seed for --fuzz")
    ap.add_argument("--faults", help="the fault kinds --fuzz draws from (heartsim fuzz --faults; default all)")
    ap.add_argument("--fuzz-dir", help="where --fuzz writes its cases (default target/oracle/fuzz/MODEL-SEED)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--replay", default=None, help="the replay command prefix to print")
    ap.add_argument("--keep-going", action="store_true", help="report every difference, not the first")
    ap.add_argument(
        "--expect-difference",
        action="store_true",
        help="each file must differ (a known model divergence, docs/oracle.md): it passes if the oracle finds a difference",
    )
    ap.add_argument(
        "--jsonl",
        action="store_true",
        help="print upstream's decision records of each file as heartsim's jsonl trace (docs/trace-format.md), compare nothing",
    )
    a = ap.parse_args()
    if a.jsonl:
        for path in a.files:
            with open(path, "rb") as f:
                model = tomllib.load(f)["scenario"]["model"]
            records, _ = __import__(RUNNERS[model][0]).run(path)
            for r in records:
                print(json.dumps(r, separators=(",", ":")))
        return 0
    replay = a.replay or f"{sys.executable} {os.path.relpath(__file__)} --heartsim {a.heartsim}"
    files = list(a.files)
    tmp = None
    started = time.monotonic()
    if a.fuzz:
        # Kept after the run (a difference's replay command names its file),
        # replaced by the next run of the same seed.
        tmp = a.fuzz_dir or os.path.join("target", "oracle", "fuzz", f"{a.model}-{a.seed}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        p = subprocess.run(
            [a.heartsim, "fuzz", "--model", a.model, "--cases", str(a.fuzz), "--seed", str(a.seed), "--emit", tmp]
            + (["--faults", a.faults] if a.faults else []),
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            print(f"error: heartsim fuzz --emit: {p.stderr.strip()}", file=sys.stderr)
            return 2
        files += sorted(
            (os.path.join(tmp, f) for f in os.listdir(tmp)),
            key=lambda f: int(f.rsplit("-", 1)[1].split(".")[0]),
        )
    counts = {"ok": 0, "known": 0, "differ": 0, "skip": 0, "error": 0}
    first_bad = None
    jobs = [(a.heartsim, f, replay) for f in files]
    results = (
        map(_check_one, jobs)
        if a.jobs <= 1
        else ProcessPoolExecutor(a.jobs).map(_check_one, jobs, chunksize=4)
    )
    for path, (status, report) in results:
        report, _, upstream_key = report.partition("@@")
        if a.expect_difference:
            # The file names the upstream record where the difference shows:
            # `# upstream-first-difference: t_us node kind peer reason`.
            want = None
            with open(path) as f:
                for line in f:
                    if line.startswith("# upstream-first-difference: "):
                        want = line.split(": ", 1)[1].strip()
            if status in ("differ", "known") and want == upstream_key:
                print(f"ok (differs, as documented): {report}", flush=True)
                status = "ok"
            elif status in ("ok", "differ", "known"):
                status, report = "differ", (
                    f"{path}: expected the documented difference (upstream {want}); got: "
                    + ("agreement" if status == "ok" else f"{upstream_key}\n{report}")
                )
        counts[status] += 1
        if status in ("differ", "error"):
            print(report, flush=True)
            first_bad = first_bad or status
            if not a.keep_going:
                break
        elif status == "known" and not a.expect_difference:
            print(f"known: {report}", flush=True)
        elif (status == "skip" and not a.fuzz) or (not a.fuzz and not a.expect_difference):
            print(f"{status}: {report}", flush=True)
    took = time.monotonic() - started
    fuzz = f" ({a.fuzz} generated, seed {a.seed})" if a.fuzz else ""
    print(f"oracle: {len(files)} scenarios{fuzz}, {took:.1f} s; {counts['known']} differ only by a known difference")
    print(f"oracle: {counts['ok'] + counts['known']} passed, {counts['differ'] + counts['error']} failed, {counts['skip']} skipped")
    if first_bad == "error":
        return 2
    return 1 if first_bad else 0


if __name__ == "__main__":
    sys.exit(main())

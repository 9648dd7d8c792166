"""links.py against the engine, bit for bit: links_vectors.json was printed
by links_vectors.rs (its header says how), built on the crates Cargo.lock
pins and on heartsim-sim's own `rng::stream` and `Network::route`.

    python3 tests/oracle/test_links.py      # (tests/oracle/run runs it)
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from links import LOST, LinkConfig, Links, Ratio, stream, stream_id  # noqa: E402

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "links_vectors.json")
MS = 1_000


def check_words(v):
    """next_u32 across a refill; next_u64 aligned, and at the buffer's
    last word (index 63) and just past it."""
    r = stream(v["seed"], v["name"])
    assert [r.next_u32() for _ in range(70)] == v["u32"], f"next_u32 {v['seed']} {v['name']!r}"
    r = stream(v["seed"], v["name"])
    assert [r.next_u64() for _ in range(8)] == v["u64"], f"next_u64 {v['seed']} {v['name']!r}"
    for skip, key in ((63, "u64_after_63"), (64, "u64_after_64")):
        r = stream(v["seed"], v["name"])
        for _ in range(skip):
            r.next_u32()
        assert [r.next_u64() for _ in range(3)] == v[key], f"{key} {v['seed']} {v['name']!r}"


def check_ranges(v):
    r = stream(v["seed"], v["name"])
    for x in v["ranges"]:
        if len(x) == 2:
            assert r.below_u32(x[0]) == x[1], f"gen_range(0..{x[0]}) seed {v['seed']}"
        else:
            assert r.inclusive_u64(x[0], x[1]) == x[2], f"gen_range({x[0]}..={x[1]}) seed {v['seed']}"


def check_route(v):
    """links_vectors.rs's network: names master, agent1, agent2."""
    names = ["master", "agent1", "agent2"]
    net = Links(v["seed"], LinkConfig(50 * MS, 150 * MS, drop=Ratio(1, 3)))
    net.set_link("agent1", "master", LinkConfig(10 * MS, 10 * MS, drop=Ratio(7, 100)))
    net.set_link(
        "agent2",
        "master",
        LinkConfig(
            5 * MS, 9 * MS, drop=Ratio(1, 10), duplicate=Ratio(1, 4), reorder=Ratio(1, 5), reorder_delay=300 * MS
        ),
    )
    net.set_link("master", "agent2", LinkConfig(1 * MS, 2 * MS))
    for frm, to, fate in v["route"]:
        got = net.route(names[frm], names[to])
        want = LOST if fate == "lost" else tuple(fate)
        assert got == want, f"route {names[frm]}->{names[to]} seed {v['seed']}: {got} != {want}"


def main() -> int:
    with open(VECTORS) as f:
        vectors = json.load(f)
    # sim/src/rng.rs `PINNED_FIRST_DRAW`.
    assert stream(7, "net/a/b").next_u64() == 10_184_321_528_948_949_718
    assert stream_id("") == 0xCBF2_9CE4_8422_2325
    counts = {"words": 0, "ranges": 0, "route": 0}
    for v in vectors:
        kind = "words" if "u32" in v else "ranges" if "ranges" in v else "route"
        {"words": check_words, "ranges": check_ranges, "route": check_route}[kind](v)
        counts[kind] += 1
    # Every path of the vectors is exercised: rejection, loss, duplicates.
    routes = [f for v in vectors if "route" in v for _, _, f in v["route"]]
    assert LOST in routes and any(f != LOST and f[1] is not None for f in routes)
    assert counts == {"words": 16, "ranges": 3, "route": 3}, counts
    print(f"links.py: {sum(counts.values())} vector sets agree with the engine's draws")
    return 0


if __name__ == "__main__":
    sys.exit(main())

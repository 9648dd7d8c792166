"""The common sections of a heartsim scenario file (docs/scenario-format.md),
read with tomllib: header, hosts, nodes and faults, resolved the way
src/scenario/ resolves them for the engine (node order, host clocks, faults
on each process of a host). The model's own node keys are left raw, for the
runner to hand to upstream as they are. The file has already been validated
by `heartsim run` (the oracle runs it first); this reader only refuses what
it does not support.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace

from links import LinkConfig, Ratio
from vworld import Clock, OracleError

UNITS = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000, "us": 1}

COMMON_NODE_KEYS = {"name", "kind", "count", "start", "clock_drift_ppm", "host"}


def duration_us(text: str) -> int:
    """`"11m30s"`, `"250ms"` (sim/src/time.rs `Duration::from_str`)."""
    rest = text.strip()
    if not rest:
        raise OracleError(f"empty duration {text!r}")
    total = 0
    while rest:
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        j = i
        while j < len(rest) and rest[j].isalpha():
            j += 1
        if i == 0 or j == i or rest[i:j] not in UNITS:
            raise OracleError(f"bad duration {text!r}")
        total += int(rest[:i]) * UNITS[rest[i:j]]
        rest = rest[j:]
    return total


def signed_us(text: str) -> int:
    t = text.strip()
    if t[:1] in "+-":
        return (-1 if t[0] == "-" else 1) * duration_us(t[1:])
    return duration_us(t)


def link_config(section: dict, base: LinkConfig) -> LinkConfig:
    """`Context::link` (src/scenario/mod.rs): the keys a `[network]`,
    `[[link]]` or `link` fault sets, over `base` (the default link for
    `[network]`, `[network]`'s for the others). Latency `"50ms"` or
    `"50ms..150ms"` (uniform, inclusive); ratios `"num/den"`."""

    def ratio(text: str) -> Ratio:
        n, _, d = text.partition("/")
        return Ratio(int(n.strip()), int(d.strip()))

    c = base
    if "latency" in section:
        lo, dots, hi = section["latency"].partition("..")
        c = replace(c, lo=duration_us(lo), hi=duration_us(hi if dots else lo))
    for key in ("drop", "duplicate", "reorder"):
        if key in section:
            c = replace(c, **{key: ratio(section[key])})
    if "reorder_delay" in section:
        c = replace(c, reorder_delay=duration_us(section["reorder_delay"]))
    return c


def _one(names) -> str:
    """A `from`/`to` of one node: `"a"` or `["a"]`."""
    return names if isinstance(names, str) else names[0]


@dataclass
class Host:
    name: str
    index: int
    clock_offset_us: int = 0
    clock_drift_ppm: int = 0
    durability: str = "auto_da_alloc"
    write_time_us: int = 0
    disk_of: int | None = None


@dataclass
class Node:
    name: str
    index: int
    kind: str
    start_us: int | None
    clock: Clock
    host: int | None
    keys: dict


@dataclass
class Fault:
    at_us: int
    kind: str
    node: int | None = None
    host: int | None = None
    raw: dict = field(default_factory=dict)
    # `link`: (from, to, the direction's config from then on).
    link: tuple[str, str, LinkConfig] | None = None


@dataclass
class Scenario:
    path: str
    model: str
    profile: str
    duration_us: int
    hosts: list[Host]
    nodes: list[Node]
    faults: list[Fault]
    # disk_of[node]: the disk the node's process sees (hosts first, then
    # one of its own per node without a host; src/scenario/hosts.rs).
    disk_of: list[int]
    disks: int
    # `[scenario] seed` (every random draw's), `[network]`, and the
    # `[[link]]` overrides as (from, to, config), in file order.
    seed: int = 0
    network: LinkConfig = field(default_factory=LinkConfig)
    links: list[tuple[str, str, LinkConfig]] = field(default_factory=list)


def load(path: str) -> Scenario:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    head = doc["scenario"]
    hosts = []
    host_ids = {}
    for i, h in enumerate(doc.get("host", [])):
        hosts.append(
            Host(
                name=h["name"],
                index=i,
                clock_offset_us=signed_us(h.get("clock_offset", "0s")),
                clock_drift_ppm=int(h.get("clock_drift_ppm", 0)),
                durability=h.get("durability", "auto_da_alloc"),
                write_time_us=duration_us(h.get("write_time", "0s")),
            )
        )
        host_ids[h["name"]] = i
    for i, h in enumerate(doc.get("host", [])):
        if "disk_of" in h:
            hosts[i].disk_of = host_ids[h["disk_of"]]
    nodes: list[Node] = []
    for n in doc.get("node", []):
        names = [n["name"]] if "count" not in n else [f"{n['name']}{i}" for i in range(1, n["count"] + 1)]
        host = host_ids[n["host"]] if "host" in n else None
        keys = {k: v for k, v in n.items() if k not in COMMON_NODE_KEYS}
        for name in names:
            if "clock_drift_ppm" in n:
                clock = Clock(int(n["clock_drift_ppm"]), 0)
            elif host is not None:
                clock = Clock(hosts[host].clock_drift_ppm, hosts[host].clock_offset_us)
            else:
                clock = Clock()
            nodes.append(
                Node(
                    name=name,
                    index=len(nodes),
                    kind=n["kind"],
                    start_us=duration_us(n["start"]) if "start" in n else 0,
                    clock=clock,
                    host=host,
                    keys=keys,
                )
            )
    ids = {n.name: n.index for n in nodes}
    disk_of = []
    own = len(hosts)
    for n in nodes:
        if n.host is None:
            disk_of.append(own)
            own += 1
        else:
            h = hosts[n.host]
            disk_of.append(h.disk_of if h.disk_of is not None else h.index)
    network = link_config(doc.get("network", {}), LinkConfig())
    links = [(_one(l["from"]), _one(l["to"]), link_config(l, network)) for l in doc.get("link", [])]
    faults: list[Fault] = []
    for f in doc.get("fault", []):
        at = duration_us(f["at"])
        kind = f["kind"]
        node = ids[f["node"]] if "node" in f else None
        host = host_ids[f["host"]] if "host" in f else None
        on_host = [n.index for n in nodes if host is not None and n.host == host]
        # A fault named by node on the only process of a host acts on the
        # host (crash: its power loss); a host's restart, clock jump or
        # drift acts on each of its processes, in node order.
        if kind == "crash" and node is not None and nodes[node].host is not None:
            host, node = nodes[node].host, None
        if kind in ("restart", "clock-jump", "clock-drift") and host is not None:
            for i in on_host:
                faults.append(Fault(at, kind, node=i, raw=f))
            continue
        if kind == "link":
            faults.append(Fault(at, kind, raw=f, link=(_one(f["from"]), _one(f["to"]), link_config(f, network))))
            continue
        faults.append(Fault(at, kind, node=node, host=host, raw=f))
    return Scenario(
        path=path,
        model=head["model"],
        profile=head["profile"],
        duration_us=duration_us(head["duration"]),
        hosts=hosts,
        nodes=nodes,
        faults=faults,
        disk_of=disk_of,
        disks=own,
        seed=int(head.get("seed", 0)),
        network=network,
        links=links,
    )

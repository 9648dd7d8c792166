"""The engine's stream medium, as the models see it: a port of
`sim/src/stream.rs` (connections over packets, Linux's RTO rules) and of
the parts of `sim/src/engine.rs` that carry its effects out (packets on the
scenario's links, links.py, with partitions, host and process lifetimes), for
runners whose upstream talks over TCP (docs/oracle.md, "The network").

It is the scenario's world, not upstream: the model and upstream meet the
same packets, retransmissions, FINs and RSTs at the same instants. The
port keeps the engine's order of everything: one queue of events ordered
by (time, seq) (`Sched`), each event carried out completely (its inputs
dispatched and the machine's reaction done) before the next, and the
stream layer's effects carried out in the engine's order
(`carry_out_stream_effects`: buffered per operation, a nested operation's
effects before the rest of the outer buffer).

Also the engine's `pause`/`resume` (a paused node's inputs parked and
replayed), `break`/`repair` (a write on a broken direction fails and
resets the writer's connection), `hold`/`stall`/`release` (data and FINs
parked at the link's end), and the "unread data" RST of a process that
ends with data parked by a pause or a stall; a blocking write on a
stalled direction waits for the release once the unread data passes
`[tcp] unread_limit` (sizes from the runner's `wire_len`, the engine's
`wire_len`: the model's description of a message plus 2). Left out, as
the runners refuse them (`Unsupported`): duplicates and reordering (which
the engine refuses on streams too).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from links import LOST, Links
from vworld import Unsupported

# TcpConfig::default() (sim/src/stream.rs).
RTO_INITIAL = 1_000_000
RTO_MIN = 200_000
RTO_MAX = 120_000_000
RETRIES2 = 15
SYN_RETRIES = 6
SYNACK_RETRIES = 5

SYN, SYNACK, ACK, DATA, FIN, RST = "SYN", "SYN-ACK", "ACK", "data", "FIN", "RST"
SYN_SENT, SYN_RECEIVED, ESTABLISHED = 0, 1, 2

REFUSED, TIMED_OUT, RESET = "connection refused", "connection timed out", "connection reset"


def model_timeout(boundary: int, base: int) -> int:
    """`TcpConfig::model_timeout` (`tcp_model_timeout`)."""
    base = max(base, 1)
    thresh = (RTO_MAX // base).bit_length() - 1
    if boundary <= thresh:
        return ((2 << boundary) - 1) * base
    return ((2 << thresh) - 1) * base + (boundary - thresh) * RTO_MAX


DATA_TIMEOUT = model_timeout(RETRIES2, RTO_MIN)  # 924.6 s
SYN_TIMEOUT = model_timeout(SYN_RETRIES, RTO_INITIAL)  # 127 s


@dataclass
class Packet:
    conn: int
    kind: str
    seq: int | None
    msg: object
    ts: int
    echo: int | None
    ack: int | None


@dataclass
class Rtt:
    """`tcp_rtt_estimator` (srtt scaled by 8, mdev by 4)."""

    srtt8: int = 0
    mdev: int = 0
    mdev_max: int = 0
    rttvar: int = 0
    rtt_seq: int = 0

    def sample(self, m_us, rto_min_us, snd_una, snd_nxt):
        m = max(m_us, 1)
        if self.srtt8 != 0:
            m -= self.srtt8 >> 3
            self.srtt8 += m
            if m < 0:
                m = -m
                m -= self.mdev >> 2
                if m > 0:
                    m >>= 3
            else:
                m -= self.mdev >> 2
            self.mdev += m
            if self.mdev > self.mdev_max:
                self.mdev_max = self.mdev
                if self.mdev_max > self.rttvar:
                    self.rttvar = self.mdev_max
            if snd_una > self.rtt_seq:
                if self.mdev_max < self.rttvar:
                    self.rttvar -= (self.rttvar - self.mdev_max) >> 2
                self.rtt_seq = snd_nxt
                self.mdev_max = rto_min_us
        else:
            self.srtt8 = m << 3
            self.mdev = m << 1
            self.rttvar = max(self.mdev, rto_min_us)
            self.mdev_max = self.rttvar
            self.rtt_seq = snd_nxt
        self.srtt8 = max(self.srtt8, 1)

    def rto_us(self):
        return (self.srtt8 >> 3) + self.rttvar


@dataclass
class Segment:
    seq: int
    msg: object  # None: the FIN
    sent_at: int | None = None


@dataclass
class Endpoint:
    peer: str
    owner: int | None
    state: int
    rto: int
    snd_una: int = 1
    snd_nxt: int = 1
    segments: deque = field(default_factory=deque)
    rtt: Rtt | None = None
    retransmits: int = 0
    retrans_stamp: int | None = None
    timer: int | None = None
    lost_until: int = 0
    rcv_nxt: int = 1
    out_of_order: dict = field(default_factory=dict)
    ts_recent: int | None = None
    fin_received: bool = False
    ack_due: int | None = None


class Streams:
    """`Streams<M>` of sim/src/stream.rs, line for line; effects are tuples
    appended to `effects`: ("transmit", from, to, packet), ("input", node,
    incarnation, peer, input), ("timer", conn, node, at | None)."""

    def __init__(self):
        self.endpoints: dict[tuple[int, str], Endpoint] = {}
        self.acks_due: list[tuple[int, str]] = []
        self.effects: list = []
        # Simplifications of the engine's that mattered in a run (none
        # today: finding T1, fixed in the engine in session 8).
        self.noted: set[str] = set()

    def take_effects(self):
        e, self.effects = self.effects, []
        return e

    def flush_acks(self, now):
        due, self.acks_due = self.acks_due, []
        for conn, node in due:
            ep = self.endpoints.get((conn, node))
            echo = None
            if ep is not None:
                echo, ep.ack_due = ep.ack_due, None
            if echo is not None:
                self.transmit(now, conn, node, ACK, None, None, echo)

    def owe_ack(self, conn, node, ts):
        ep = self.endpoints[(conn, node)]
        was = ep.ack_due
        ep.ack_due = ts
        if was is None:
            self.acks_due.append((conn, node))

    def peer(self, conn, node):
        ep = self.endpoints.get((conn, node))
        return ep.peer if ep else None

    def connect(self, now, conn, frm, owner, to):
        ep = Endpoint(to, owner, SYN_SENT, RTO_INITIAL)
        ep.retrans_stamp = now
        self.endpoints[(conn, frm)] = ep
        self.transmit(now, conn, frm, SYN, None, None, None)
        self.arm(now, conn, frm)

    def write(self, now, conn, node, owner, msg):
        """The peer, or None (`WriteRefused::Gone`)."""
        ep = self.owned(conn, node, owner)
        if ep is None:
            return None
        self.queue(now, conn, node, msg)
        return ep.peer

    def close(self, now, conn, node, owner):
        ep = self.owned(conn, node, owner)
        if ep is None:
            return
        ep.owner = None
        if ep.state == SYN_SENT:
            del self.endpoints[(conn, node)]
            return
        self.queue(now, conn, node, None)

    def reset(self, now, conn, node, owner):
        if self.owned(conn, node, owner) is not None:
            ep = self.endpoints.pop((conn, node))
            self.send_rst(now, conn, node, ep.peer)

    def drop_endpoint(self, conn, node):
        """A write failed locally (the `break` fault): the endpoint is gone
        without a word to the peer."""
        self.endpoints.pop((conn, node), None)

    def process_gone(self, now, node, owner):
        mine = sorted(c for (c, n), ep in self.endpoints.items() if n == node and ep.owner == owner)
        for conn in mine:
            ep = self.endpoints[(conn, node)]
            if ep.state == SYN_RECEIVED:
                ep = self.endpoints.pop((conn, node))
                self.send_rst(now, conn, node, ep.peer)
            else:
                self.close(now, conn, node, owner)

    def host_down(self, node):
        for k in [k for k in self.endpoints if k[1] == node]:
            del self.endpoints[k]

    def on_packet(self, now, node, frm, listener, p: Packet):
        conn = p.conn
        ep = self.endpoints.get((conn, node))
        if ep is None:
            return self.no_endpoint(now, node, frm, listener, p)
        if ep.peer != frm:
            return
        if p.kind == RST:
            ep = self.endpoints.pop((conn, node))
            self.fail(conn, node, ep, REFUSED if ep.state == SYN_SENT else RESET)
        elif p.kind == SYN:
            # A re-sent SYN-ACK echoes the first SYN's TSval (the engine
            # since the session-9 audit's F1).
            if ep.state == SYN_RECEIVED:
                self.transmit(now, conn, node, SYNACK, None, None, ep.ts_recent)
                self.arm(now, conn, node)
        elif p.kind == SYNACK:
            if ep.state == SYN_SENT:
                ep.state = ESTABLISHED
                ep.retrans_stamp = None
                ep.retransmits = 0
                ep.timer = None
                # The SYN-ACK's TSval is stored (`tcp_store_ts_recent`): the
                # client's first segment, whichever it is, gives the server
                # its first RTT sample (the engine since audit A3).
                ep.ts_recent = p.ts
                self.sample_rtt(now, conn, node, p.echo)
                ep = self.endpoints[(conn, node)]
                # The SYN's timer goes before the input: what the client
                # writes on `Connected` arms its own (Linux
                # `tcp_event_new_data_sent`; the engine since finding T1).
                self.effects.append(("timer", conn, node, None))
                # The kernel's ACK goes before the process writes.
                self.transmit(now, conn, node, ACK, None, None, p.ts)
                if ep.owner is not None:
                    self.effects.append(("input", node, ep.owner, frm, ("Connected", conn)))
                self.flush(now, conn, node)
            else:
                # A challenge ACK (RFC 5961 4.2) echoes the stored TSval.
                self.transmit(now, conn, node, ACK, None, None, ep.ts_recent)
        else:  # ACK, data, FIN
            if ep.state == SYN_SENT:
                return
            if ep.state == SYN_RECEIVED:
                if p.ack is None:
                    return
                ep.state = ESTABLISHED
                # The SYN-ACK timer ends with the request (the engine's
                # server SYN-ACK timer, session 9).
                ep.retransmits = 0
                ep.rto = RTO_INITIAL
                if ep.timer is not None:
                    ep.timer = None
                    self.effects.append(("timer", conn, node, None))
                self.sample_rtt(now, conn, node, p.echo)
                ep = self.endpoints[(conn, node)]
                if ep.owner is not None:
                    self.effects.append(("input", node, ep.owner, frm, ("Accepted", conn)))
                self.flush(now, conn, node)
            if p.ack is not None:
                self.on_ack(now, conn, node, p.ack, p.echo)
                if (conn, node) not in self.endpoints:
                    return
            if p.kind == DATA:
                self.on_segment(now, conn, node, p.seq, p.msg, p.ts, False)
            elif p.kind == FIN:
                self.on_segment(now, conn, node, p.seq, None, p.ts, True)

    def no_endpoint(self, now, node, frm, listener, p):
        conn = p.conn
        if p.kind == SYN and listener is not None:
            ep = Endpoint(frm, listener, SYN_RECEIVED, RTO_INITIAL)
            ep.ts_recent = p.ts
            self.endpoints[(conn, node)] = ep
            self.transmit(now, conn, node, SYNACK, None, None, p.ts)
            self.arm(now, conn, node)
        elif p.kind == SYN:
            self.send_rst(now, conn, node, frm)
        elif p.kind == RST:
            pass
        else:
            self.send_rst(now, conn, node, frm)

    def on_ack(self, now, conn, node, ack, echo):
        ep = self.endpoints[(conn, node)]
        if ack <= ep.snd_una or ack > ep.snd_nxt:
            return
        ep.snd_una = ack
        while ep.segments and ep.segments[0].seq < ack:
            ep.segments.popleft()
        ep.retransmits = 0
        ep.retrans_stamp = None
        self.sample_rtt(now, conn, node, echo)
        ep = self.endpoints[(conn, node)]
        resend = [s.seq for s in ep.segments if s.sent_at is not None and s.seq < ep.lost_until]
        for seq in resend:
            self.send_segment(now, conn, node, seq, 1)
        ep = self.endpoints[(conn, node)]
        ep.lost_until = 0
        outstanding = any(s.sent_at is not None for s in ep.segments)
        ep.timer = None
        if outstanding:
            self.arm(now, conn, node)
        else:
            self.effects.append(("timer", conn, node, None))
            self.remove_if_done(now, conn, node)

    def remove_if_done(self, now, conn, node):
        ep = self.endpoints[(conn, node)]
        if ep.owner is None and not ep.segments and ep.fin_received:
            if ep.ack_due is not None:
                self.transmit(now, conn, node, ACK, None, None, ep.ack_due)
            del self.endpoints[(conn, node)]

    def on_segment(self, now, conn, node, seq, msg, ts, is_fin):
        ep = self.endpoints[(conn, node)]
        peer = ep.peer
        if ep.owner is None and not is_fin and seq >= ep.rcv_nxt:
            del self.endpoints[(conn, node)]
            self.send_rst(now, conn, node, peer)
            return
        if seq >= ep.rcv_nxt:
            ep.out_of_order.setdefault(seq, (is_fin, msg))
        if seq == ep.rcv_nxt:
            ep.ts_recent = ts
        delivered = []
        while ep.rcv_nxt in ep.out_of_order:
            delivered.append(ep.out_of_order.pop(ep.rcv_nxt))
            ep.rcv_nxt += 1
        owner = ep.owner
        fin = False
        for f, m in delivered:
            if not f:
                if owner is not None:
                    self.effects.append(("input", node, owner, peer, ("Data", conn, m)))
            else:
                fin = True
                if owner is not None:
                    self.effects.append(("input", node, owner, peer, ("Closed", conn)))
        self.owe_ack(conn, node, ts)
        if fin:
            self.endpoints[(conn, node)].fin_received = True
            self.remove_if_done(now, conn, node)

    def on_timer(self, now, conn, node):
        ep = self.endpoints.get((conn, node))
        if ep is None:
            return
        if ep.timer is None or ep.timer > now:
            return
        ep.timer = None
        if ep.state == SYN_SENT:
            first = ep.retrans_stamp if ep.retrans_stamp is not None else now
            if ep.retransmits > 0 and now - first >= SYN_TIMEOUT:
                ep = self.endpoints.pop((conn, node))
                return self.fail(conn, node, ep, TIMED_OUT)
            ep.retransmits += 1
            ep.rto = min(ep.rto + ep.rto, RTO_MAX)
            self.transmit(now, conn, node, SYN, None, None, None)
            return self.arm(now, conn, node)
        if ep.state == SYN_RECEIVED:
            # `reqsk_timer_handler`: resend, doubling; dropped silently
            # after SYNACK_RETRIES resends.
            if ep.retransmits >= SYNACK_RETRIES:
                del self.endpoints[(conn, node)]
                return
            ep.retransmits += 1
            ep.rto = min(ep.rto + ep.rto, RTO_MAX)
            self.transmit(now, conn, node, SYNACK, None, None, ep.ts_recent)
            return self.arm(now, conn, node)
        head = ep.segments[0] if ep.segments and ep.segments[0].sent_at is not None else None
        if head is None:
            return
        if ep.retransmits > 0:
            first = ep.retrans_stamp if ep.retrans_stamp is not None else head.sent_at
            if now - first >= DATA_TIMEOUT:
                ep = self.endpoints.pop((conn, node))
                return self.fail(conn, node, ep, TIMED_OUT)
        else:
            ep.retrans_stamp = head.sent_at
        ep.retransmits += 1
        ep.lost_until = ep.snd_nxt
        self.send_segment(now, conn, node, head.seq, ep.retransmits)
        ep = self.endpoints[(conn, node)]
        ep.rto = min(ep.rto + ep.rto, RTO_MAX)
        self.arm(now, conn, node)

    def owned(self, conn, node, owner):
        ep = self.endpoints.get((conn, node))
        return ep if ep is not None and ep.owner == owner else None

    def queue(self, now, conn, node, msg):
        ep = self.endpoints[(conn, node)]
        seq = ep.snd_nxt
        ep.snd_nxt += 1
        ep.segments.append(Segment(seq, msg))
        if ep.state == ESTABLISHED:
            self.flush(now, conn, node)

    def flush(self, now, conn, node):
        ep = self.endpoints[(conn, node)]
        unsent = [s.seq for s in ep.segments if s.sent_at is None]
        if not unsent:
            return
        for seq in unsent:
            self.send_segment(now, conn, node, seq, None)
        if self.endpoints[(conn, node)].timer is None:
            self.arm(now, conn, node)

    def send_segment(self, now, conn, node, seq, retry):
        ep = self.endpoints[(conn, node)]
        seg = next((s for s in ep.segments if s.seq == seq), None)
        if seg is None:
            return
        seg.sent_at = now
        echo = ep.ack_due if ep.ack_due is not None else ep.ts_recent
        ep.ack_due = None
        kind = FIN if seg.msg is None else DATA
        p = Packet(conn, kind, seq, seg.msg, now, echo, ep.rcv_nxt)
        self.effects.append(("transmit", node, ep.peer, p))

    def transmit(self, now, conn, node, kind, seq, msg, echo):
        ep = self.endpoints[(conn, node)]
        ack = None if kind == SYN else ep.rcv_nxt
        self.effects.append(("transmit", node, ep.peer, Packet(conn, kind, seq, msg, now, echo, ack)))

    def send_rst(self, now, conn, frm, to):
        self.effects.append(("transmit", frm, to, Packet(conn, RST, None, None, now, None, None)))

    def sample_rtt(self, now, conn, node, echo):
        if echo is None:
            return
        ep = self.endpoints[(conn, node)]
        if ep.rtt is None:
            ep.rtt = Rtt()
        ep.rtt.sample(now - echo, RTO_MIN, ep.snd_una, ep.snd_nxt)
        ep.rto = min(max(ep.rtt.rto_us(), 0), RTO_MAX)

    def arm(self, now, conn, node):
        ep = self.endpoints[(conn, node)]
        ep.timer = now + ep.rto
        self.effects.append(("timer", conn, node, ep.timer))

    def fail(self, conn, node, ep, error):
        if ep.owner is None or ep.state == SYN_RECEIVED:
            return
        inp = ("ConnectFailed", conn, error) if ep.state == SYN_SENT else ("Reset", conn, error)
        self.effects.append(("input", node, ep.owner, ep.peer, inp))


class Sched:
    """The engine's event queue on an asyncio loop: `at(t_us, fn)` runs `fn`
    at `t_us` after everything queued earlier for that instant (the loop's
    timers are ordered by (time, seq) and run one at a time, each with
    what it makes ready, see decnet_runner's `_Loop`)."""

    def __init__(self, loop):
        self.loop = loop

    def now(self) -> int:
        return self.loop.now_us

    def at(self, t_us, fn):
        return self.loop.call_event_us(t_us, fn)

    def running(self, node):
        """The node's input is carried out: the timers it makes are its."""
        return self.loop.running(node)

    def forget(self, node):
        """The node's process ended: its timers go too."""
        self.loop.forget(node)

    def later(self, node, fn):
        """`fn` runs as `node` after what the current event made ready."""
        self.loop.later(node, fn)

    def pause(self, node):
        self.loop.pause(node)

    def resume(self, node):
        self.loop.resume(node)


class Node:
    """A node's process and host as the engine keeps them."""

    def __init__(self, name):
        self.name = name
        self.host_up = True
        self.up = False  # a machine runs
        self.incarnation = 0
        self.listening = False
        self.dispatch = None  # (peer, input) -> None, while up
        # While paused: the inputs that reached the process, replayed on
        # resume (the engine's `paused`).
        self.paused: list | None = None


@dataclass
class Held:
    """A held or stalled direction's parked traffic (the engine's `Held`):
    inputs that reached its end, and blocked writes' `WriteDone`s, each
    `(node, incarnation, peer, input)`."""

    stall: bool = False
    parked: list = field(default_factory=list)
    writes: list = field(default_factory=list)


class Net:
    """The engine's side of the stream medium: the links' latency and loss
    (`links.Links`, the engine's draws), partitions (checked when a packet
    is sent and again when it arrives, `Network::route`, `Event::Packet`),
    a host down drops what reaches it."""

    def __init__(self, sched: Sched, links: Links, nodes: dict[str, Node], wire_len=None, unread_limit=None):
        self.sched = sched
        # (sender, message) -> its size on a stream, for stalled writes.
        self.wire_len = wire_len
        # `TcpConfig::default().unread_limit`: 128 KiB receive buffer +
        # 16 KiB socket buffer + 64 KiB in flight.
        self.unread_limit = 131_072 + 16_384 + 65_536 if unread_limit is None else unread_limit
        self.links = links
        self.nodes = nodes
        self.streams = Streams()
        self.partitions: list[tuple[frozenset, frozenset]] = []
        self.rto_timers: dict[tuple[int, str], object] = {}
        self.next_conn = 0
        # `break`: directions whose writes fail (`Network::break_link`).
        self.broken: set[tuple[str, str]] = set()
        # `hold`/`stall`: (from, to) -> what the direction holds.
        self.held: dict[tuple[str, str], Held] = {}

    # -- the network
    def blocked(self, frm, to):
        return any(frm in a and to in b for a, b in self.partitions)

    def partition(self, groups):
        """`Partition::symmetric`, added to those in force."""
        for i, a in enumerate(groups):
            for j, b in enumerate(groups):
                if i != j:
                    self.partitions.append((frozenset(a), frozenset(b)))

    def partition_one_way(self, frm, to):
        """A one-way `Partition { from, to }`, added to those in force."""
        self.partitions.append((frozenset(frm), frozenset(to)))

    def heal(self):
        self.partitions.clear()

    def break_link(self, frm, to):
        self.broken.add((frm, to))

    def repair_link(self, frm, to):
        self.broken.discard((frm, to))

    def hold(self, frm, to, stall):
        """`Fault::Hold`/`Fault::Stall`: what reaches `to` from `frm` on a
        stream (data, FIN) is parked until `release`."""
        held = self.held.setdefault((frm, to), Held())
        held.stall |= stall

    def release(self, frm, to):
        """Handed over at once, ahead of anything else due now, one by one
        (a paused receiver parks them again)."""
        held = self.held.pop((frm, to), Held())
        for node, incarnation, peer, inp in held.parked + held.writes:
            self.sched.later(node, lambda a=(node, incarnation, peer, inp): self.arrive(*a))

    # -- what a machine does (the engine's Output handling)
    def connect(self, node, to):
        if to not in self.nodes:
            raise ValueError(f"{node} connects to {to!r}, not a node")
        self.next_conn += 1
        conn = self.next_conn
        n = self.nodes[node]
        self.streams.connect(self.sched.now(), conn, node, n.incarnation, to)
        self.carry_out()
        return conn

    def send(self, node, conn, msg, awaited=False):
        """The process writes `msg`. An `awaited` write (`Wait::Write`)
        answers whether it is done now; if not (a stalled direction whose
        unread data would pass `unread_limit`), a `("WriteDone", conn)`
        input comes at the release."""
        incarnation = self.nodes[node].incarnation
        peer = self.streams.peer(conn, node)
        if peer is not None and (node, peer) in self.broken:
            # `Engine::write` under `break`: the write fails, the endpoint
            # is gone, and the process's reads fail too (an `Input::Reset`
            # after the write's own outcome, in the same dispatch).
            self.streams.drop_endpoint(conn, node)
            self.sched.later(node, lambda: self.deliver(node, incarnation, peer, ("Reset", conn, RESET)))
            return True
        # A blocking write on a stalled connection waits only once the
        # unread bytes pass the buffers (`fits`, `Output::Send`).
        held = self.held.get((node, peer)) if peer is not None else None
        stalled = awaited and held is not None and held.stall
        if stalled:
            unread = sum(self.size(p, m[2]) for _, _, p, m in held.parked if m[0] == "Data")
            fits = unread + self.size(node, msg) <= self.unread_limit
        written = self.streams.write(self.sched.now(), conn, node, incarnation, msg) is not None
        self.carry_out()
        if stalled and written and not fits:
            held.writes.append((node, incarnation, peer, ("WriteDone", conn)))
            return False
        return True

    def size(self, sender, msg):
        if self.wire_len is None:
            raise Unsupported("a stalled write (the runner has no message sizes)")
        return self.wire_len(sender, msg)

    def close(self, node, conn):
        self.streams.close(self.sched.now(), conn, node, self.nodes[node].incarnation)
        self.carry_out()

    # -- process and host lifetimes (Engine::boot, end_process, crash)
    def boot(self, name, dispatch):
        n = self.nodes[name]
        n.up = True
        n.incarnation += 1
        n.host_up = True
        n.listening = False
        n.dispatch = dispatch

    def take_down(self, name):
        self.sched.forget(name)
        n = self.nodes[name]
        n.up = False
        n.incarnation += 1
        n.listening = False
        n.dispatch = None
        n.paused = None

    def end_process(self, name):
        n = self.nodes[name]
        if n.up:
            # Data parked by a pause and never read: the kernel resets the
            # connection (`unread_conns`; Linux `__tcp_close`).
            stalled = [e for (_, to), held in self.held.items() if to == name and held.stall for e in held.parked]
            unread = sorted(
                {inp[1] for _, _, inp in n.paused or [] if inp[0] == "Data"}
                | {inp[1] for node, _, _, inp in stalled if node == name and inp[0] == "Data"}
            )
            for conn in unread:
                self.streams.reset(self.sched.now(), conn, name, n.incarnation)
            # The peers' writes blocked on those connections are dropped
            # (`end_process_as`): their machines learn of the reset.
            for (_, to), held in self.held.items():
                if to == name:
                    held.writes = [e for e in held.writes if e[3][1] not in unread]
            self.streams.process_gone(self.sched.now(), name, n.incarnation)
        self.take_down(name)
        self.carry_out()

    def crash(self, name):
        self.take_down(name)
        self.nodes[name].host_up = False
        self.streams.host_down(name)

    # -- carrying effects out (Engine::carry_out_stream_effects)
    def carry_out(self):
        for e in self.streams.take_effects():
            if e[0] == "transmit":
                # `Engine::transmit_packet`: `Network::route` (the
                # partition, then the link's loss and delay, links.py);
                # a duplicate (never, on streams) queued before the packet.
                _, frm, to, p = e
                fate = LOST if self.blocked(frm, to) else self.links.route(frm, to)
                if fate != LOST:
                    delay, again = fate
                    for d in [again, delay] if again is not None else [delay]:
                        self.sched.at(self.sched.now() + d, lambda frm=frm, to=to, p=p: self.packet(frm, to, p))
            elif e[0] == "input":
                _, node, incarnation, peer, inp = e
                self.arrive(node, incarnation, peer, inp)
            else:
                _, conn, node, at = e
                old = self.rto_timers.pop((conn, node), None)
                if old is not None:
                    old.cancel()
                if at is not None:
                    self.rto_timers[(conn, node)] = self.sched.at(at, lambda c=conn, n=node: self.rto(c, n))

    def arrive(self, node, incarnation, peer, inp):
        """`Engine::step` of a stream input: a held link keeps data and
        FINs, a paused node keeps everything, else it is dispatched."""
        held = self.held.get((peer, node)) if inp[0] in ("Data", "Closed") else None
        if held is not None:
            held.parked.append((node, incarnation, peer, inp))
        elif self.nodes[node].paused is not None:
            self.nodes[node].paused.append((incarnation, peer, inp))
        else:
            self.deliver(node, incarnation, peer, inp)

    def deliver(self, node, incarnation, peer, inp):
        n = self.nodes[node]
        if n.incarnation == incarnation and n.up and n.dispatch is not None:
            with self.sched.running(node):
                n.dispatch(peer, inp)

    # -- pause and resume (`Fault::Pause`, `Fault::Resume`)
    def pause(self, name):
        n = self.nodes[name]
        if n.paused is None:
            n.paused = []
        self.sched.pause(name)

    def resume(self, name):
        """The parked inputs are handed over in order, each carried out
        (with what it makes ready) before the next; then the node's timer
        is armed afresh."""
        n = self.nodes[name]
        parked, n.paused = n.paused or [], None
        self.sched.resume(name)
        for incarnation, peer, inp in parked:
            self.sched.later(name, lambda i=incarnation, p=peer, x=inp: self.arrive(name, i, p, x))

    def packet(self, frm, to, p):
        n = self.nodes[to]
        if not n.host_up or self.blocked(frm, to):
            return
        listener = n.incarnation if (n.listening and n.up) else None
        now = self.sched.now()
        self.streams.on_packet(now, to, frm, listener, p)
        self.carry_out()
        self.streams.flush_acks(now)
        self.carry_out()

    def rto(self, conn, node):
        self.rto_timers.pop((conn, node), None)
        self.streams.on_timer(self.sched.now(), conn, node)
        self.carry_out()

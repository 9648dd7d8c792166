//! The directory server's peer registry and heartbeat loop, as one machine.
//!
//! The sweep is upstream's coroutine unrolled into states:
//!
//! ```text
//! Sleeping --deadline--> sweep: 1. hard-evict   (synchronous)
//!                               2. probe queue  (one awaited send at a time)
//!          <--no PING out--     3. Waiting pong_wait
//!          <----------------    4. evict still pending
//! ```
//!
//! joinmarket-ng sleeps `sweep_interval` after the sweep ends (so a sweep
//! that waited for PONGs starts the next one 90 s later); joinmarket-rs ticks
//! on a fixed grid from start + 60 s (tokio `interval_at`, `Burst` on missed
//! ticks).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use heartsim_sim::{
    ConnId as StreamId, Deadline, Duration, Input, NodeId, Now, Outbox, SendError, Timestamp,
};

mod awaits;
mod channel;
mod lock;

use awaits::{Awaits, Ctx, NgWrite, Step};
use channel::Writing;
use lock::{OwnerLock, Registering, Want};

use super::location::Location;
use super::{kind, AuthCode, Frame, NickAuth, Profile, RateLimit, Timers};

/// Connection id: increasing per accepted handshake, so ascending order is
/// registration order (Python iterates its registry dict in insertion order;
/// joinmarket-rs iterates a DashMap in hash order, which we pin to this).
type ConnId = u64;

/// A registry key (nick, or onion location under eb812d4c), interned at its
/// first handshake so sweeps compare integers, not strings.
type KeyId = u32;

#[derive(Debug)]
struct Conn {
    node: NodeId,
    /// The TCP connection the peer handshook on: every frame of this peer
    /// comes on it, and every frame to it goes on it.
    stream: StreamId,
    key: KeyId,
    ping: bool,
    maker: bool,
    /// On the profile's clock (wall for joinmarket-ng, monotonic for -rs).
    last_seen: Timestamp,
    /// joinmarket-rs: times of recent PINGs, PUBMSGs and `!orderbook`s
    /// from this peer, one window per [`RateLimit`].
    recent: [VecDeque<Timestamp>; 3],
    /// Where the sweep visits it: its own id, except under eb812d4c, where
    /// a registration that overwrites a key keeps the old entry's place
    /// (`self._peers[key] = peer` keeps a dict key's position,
    /// `peer_registry.py@eb8` `register`).
    order: ConnId,
    /// HEAD with nick authentication: the verified pubkey (here: the node,
    /// whose key is the same across its connections).
    verified: Option<NodeId>,
    /// What a "disconnected" PEERLIST entry says of it.
    nick: Arc<str>,
    location: Arc<str>,
    /// joinmarket-ng: its message token bucket (micro-tokens, last refill),
    /// from its first line on (see [`Directory::rate_allows`]).
    bucket: Option<(u64, Timestamp)>,
}

/// HEAD: a connection that negotiated nick authentication, answered, sent
/// its challenge, and waits for the proof (`_perform_nick_auth`).
#[derive(Debug)]
pub(super) struct Authenticating {
    deadline: Timestamp,
    peer: NodeId,
    nick: Arc<str>,
    location: Arc<str>,
    key: KeyId,
    ping: bool,
    maker: bool,
}

/// joinmarket-ng: a connection whose handshake was answered, in the
/// `await asyncio.sleep(0.05)` before it becomes HANDSHAKED (HEAD
/// `server.py` `_perform_handshake` ~321-334; eb812d4c ~225-239). Its
/// handler task is asleep, so whatever arrives on it meanwhile is read
/// after the sleep, in order.
#[derive(Debug)]
struct Settling {
    id: ConnId,
    held: Vec<Input<Frame>>,
}

/// What the pending-PONG set is keyed by: `(key, conn)` where pending is
/// per connection, `(key, 0)` under eb812d4c (peer key only).
type PendingKey = (KeyId, ConnId);

#[derive(Debug)]
enum Phase {
    /// Not started, or stopped.
    Idle,
    Sleeping {
        until: Timestamp,
    },
    Probing(Sweep),
    Waiting {
        until: Timestamp,
        sweep: Sweep,
    },
}

#[derive(Debug)]
struct Sweep {
    /// The one "now" of the sweep, on the profile's clock: joinmarket-ng
    /// computes both cutoffs from it once (`heartbeat.py` `_sweep`);
    /// joinmarket-rs calls `elapsed()` in each phase, the same instant
    /// unless a phase blocks, which it never does.
    t: Timestamp,
    /// Step 1: peers to hard-evict, in order, with their keys.
    hard: VecDeque<(ConnId, KeyId)>,
    /// Step 2's queue, built once step 1 is done (re-queried then, as
    /// upstream calls `get_peers_idle_since` after the evictions).
    queue: Option<VecDeque<(ConnId, KeyId)>>,
    /// Step 4's evictions still to do, once the PONG wait is over (an
    /// eviction that awaits its broadcast or its close holds the rest).
    timed_out: Option<VecDeque<(PendingKey, NodeId)>>,
    /// A send whose outcome the sweep awaits.
    awaiting: Option<Awaiting>,
    /// joinmarket-ng's `pinged_owners` (who step 4 may evict); for
    /// joinmarket-rs, non-empty is its `ping_sent`.
    pinged: Vec<(PendingKey, NodeId)>,
}

#[derive(Clone, Copy, Debug)]
struct Awaiting {
    token: u64,
    conn: ConnId,
    key: KeyId,
    node: NodeId,
    stream: StreamId,
    is_ping: bool,
    /// When the write started (monotonic): joinmarket-ng HEAD gives up
    /// `_DIRECTORY_SEND_TIMEOUT_SEC` later.
    since: Timestamp,
    /// HEAD: false while it waits for the nick's lock.
    started: bool,
}

/// Why a heartbeat send failed, as the sweep sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
enum SendFailure {
    #[error(transparent)]
    Net(#[from] SendError),
    /// `asyncio.wait_for` timed out. Its `TimeoutError` has no message, so
    /// upstream's reason reads `"send failed: "`, with nothing after it.
    #[error("")]
    Timeout,
}

impl SendFailure {
    /// For `send-error` records, which upstream only logs: never empty.
    fn log_text(self) -> Cow<'static, str> {
        match self {
            SendFailure::Net(e) => e.to_string().into(),
            SendFailure::Timeout => "send timed out".into(),
        }
    }
}

#[derive(Debug)]
pub struct Directory {
    profile: Profile,
    timers: Timers,
    /// The `!orderbook` probe, built once: every probe is the same line.
    probe: Frame,
    conns: BTreeMap<ConnId, Conn>,
    /// The registered connection on each TCP connection.
    by_stream: BTreeMap<StreamId, ConnId>,
    /// Accepted connections whose handshake has not come yet, by the
    /// monotonic deadline upstream gives it (`handshake_timeout`).
    awaiting_handshake: BTreeMap<StreamId, (Timestamp, NodeId)>,
    /// The same, by deadline.
    handshake_deadlines: BTreeSet<(Timestamp, StreamId)>,
    /// joinmarket-ng: connections in the 50 ms before HANDSHAKED.
    settling: BTreeMap<StreamId, Settling>,
    /// The same, by deadline.
    settle_deadlines: BTreeSet<(Timestamp, StreamId)>,
    /// eb812d4c: open connections whose reader still acts on a key they no
    /// longer hold (the key was overwritten by a newer handshake, or its
    /// registration was removed by another connection's cleanup). Upstream's
    /// reader loop keeps the `peer_key` it handshook with (`server.py@eb8`
    /// `_handle_peer_messages`, `_cleanup_peer`).
    stale_readers: BTreeMap<StreamId, (KeyId, NodeId)>,
    /// joinmarket-rs's Sybil guard: the key holding each maker onion host.
    onion_hosts: BTreeMap<Arc<str>, KeyId>,
    /// HEAD: nick authentication, when configured.
    nick_auth: Option<NickAuth>,
    /// HEAD: connections waiting for their nick-authentication proof.
    authenticating: BTreeMap<StreamId, Authenticating>,
    /// The same, by deadline.
    auth_deadlines: BTreeSet<(Timestamp, StreamId)>,
    /// Every key seen so far, interned.
    key_ids: BTreeMap<Arc<str>, KeyId>,
    /// The registry: which connection owns each peer key.
    by_key: BTreeMap<KeyId, ConnId>,
    /// `(last_seen, conn)` of every heartbeat-eligible peer, so a sweep
    /// visits only the peers that are due, not all of them.
    idle_index: BTreeSet<(Timestamp, ConnId)>,
    pending: BTreeSet<PendingKey>,
    /// HEAD: writes abandoned by the 30 s send timeout, still in asyncio's
    /// buffer: `asyncio.wait_for` cancels the `drain()`, not the bytes.
    undrained: BTreeMap<StreamId, u64>,
    /// joinmarket-ng: what each coroutine awaits (`awaits.rs`).
    awaits: BTreeMap<Ctx, Awaits>,
    /// joinmarket-ng: awaited broadcast and relay writes, by token.
    ng_writes: BTreeMap<u64, NgWrite>,
    /// HEAD: each nick's owner lock, while taken or waited for (`lock.rs`).
    locks: BTreeMap<KeyId, OwnerLock>,
    /// HEAD: the nick whose lock is being handed to a waiter.
    granted: Option<KeyId>,
    /// HEAD: handshakes waiting for their nick's lock in `_register_peer`,
    /// with the lines that came meanwhile (their handler is not reading).
    registering: BTreeMap<StreamId, Vec<Input<Frame>>>,
    /// HEAD: bounded closes of displaced connections, by deadline.
    close_bounds: BTreeSet<(Timestamp, Ctx, StreamId)>,
    /// HEAD: connections to close once their abandoned write drains, no
    /// longer awaited by anyone.
    close_on_drain: BTreeSet<StreamId>,
    /// HEAD: connections of departed peers that a departure will close
    /// once its broadcast is done, still in upstream's `self.connections`,
    /// their handlers still reading.
    closing: BTreeSet<StreamId>,
    /// joinmarket-ng: departures are broadcast and PUBMSGs relayed
    /// (`[config] broadcasts`, on unless a scale run turns it off).
    broadcasts: bool,
    /// joinmarket-rs: each peer task's writes in progress, by token.
    task_writes: BTreeMap<u64, StreamId>,
    /// joinmarket-rs: peer tasks inside a write (see [`Writing`]).
    writing: BTreeMap<StreamId, Writing>,
    /// joinmarket-rs: nicks an evicted peer's task still holds in admission
    /// (and its onion in the Sybil guard) until the task exits.
    reserved: BTreeSet<KeyId>,
    phase: Phase,
    /// joinmarket-rs: the next tick of the `interval_at` grid.
    next_tick: Timestamp,
    next_conn: ConnId,
    next_token: u64,
}

impl Directory {
    pub fn new(profile: Profile, timers: Timers, nick: &str) -> Self {
        Directory {
            profile,
            timers,
            probe: Frame::orderbook_probe(nick),
            conns: BTreeMap::new(),
            by_stream: BTreeMap::new(),
            awaiting_handshake: BTreeMap::new(),
            handshake_deadlines: BTreeSet::new(),
            settling: BTreeMap::new(),
            settle_deadlines: BTreeSet::new(),
            stale_readers: BTreeMap::new(),
            onion_hosts: BTreeMap::new(),
            nick_auth: None,
            authenticating: BTreeMap::new(),
            auth_deadlines: BTreeSet::new(),
            key_ids: BTreeMap::new(),
            by_key: BTreeMap::new(),
            idle_index: BTreeSet::new(),
            pending: BTreeSet::new(),
            undrained: BTreeMap::new(),
            awaits: BTreeMap::new(),
            ng_writes: BTreeMap::new(),
            locks: BTreeMap::new(),
            granted: None,
            registering: BTreeMap::new(),
            close_bounds: BTreeSet::new(),
            close_on_drain: BTreeSet::new(),
            closing: BTreeSet::new(),
            broadcasts: true,
            task_writes: BTreeMap::new(),
            writing: BTreeMap::new(),
            reserved: BTreeSet::new(),
            phase: Phase::Idle,
            next_tick: Timestamp::ZERO,
            next_conn: 1,
            next_token: 1,
        }
    }

    /// Turn on HEAD's nick authentication (`nick_auth_directory_id` set).
    pub fn with_nick_auth(mut self, nick_auth: Option<NickAuth>) -> Self {
        self.nick_auth = nick_auth;
        self
    }

    /// joinmarket-ng: broadcast departures and relay PUBMSGs (default on).
    pub fn with_broadcasts(mut self, on: bool) -> Self {
        self.broadcasts = on;
        self
    }

    /// Number of registered peer connections.
    pub fn registered(&self) -> usize {
        self.idle_index.len()
    }

    /// Whether a PONG is pending for `node`'s newest registered
    /// connection (tests).
    pub fn is_pending(&self, node: NodeId) -> bool {
        self.conns
            .iter()
            .rev()
            .find(|(_, c)| c.node == node)
            .is_some_and(|(&id, c)| self.pending.contains(&self.pending_key(c.key, id)))
    }

    fn pending_key(&self, key: KeyId, conn: ConnId) -> PendingKey {
        let conn = if self.profile.pending_per_connection() {
            conn
        } else {
            0
        };
        (key, conn)
    }

    pub fn handle(&mut self, now: Now, input: Input<Frame>, out: &mut Outbox<Frame>) {
        // HEAD: writes that a reset fails, once its handler has queued its
        // cleanup.
        let mut fail_after = None;
        if let Input::Data { conn, .. } | Input::Closed { conn, .. } | Input::Reset { conn, .. } =
            &input
        {
            let conn = *conn;
            if let Input::Reset { .. } = &input {
                // The transport fails whoever reads: a close waiting for
                // its buffer returns, awaited writes to it fail. asyncio's
                // `connection_lost` wakes the reader before the writer
                // (`StreamReaderProtocol` sets the reader's exception, then
                // `FlowControlMixin` fails `drain()`): a handler that is
                // reading starts its cleanup first (under HEAD's owner
                // lock, it queues for the nick before the failed write
                // lets go of it, and so removes the peer first).
                if self.undrained.remove(&conn).is_some() {
                    self.drained(now, conn, out);
                }
                let reading = !self.settling.contains_key(&conn)
                    && !self.registering.contains_key(&conn)
                    && !self.awaits.contains_key(&Ctx::Reader(conn));
                if self.profile.is_ng() && reading {
                    fail_after = Some(conn);
                } else {
                    self.fail_writes_to(now, conn, out);
                }
            }
            if let Some(held) = self.registering.get_mut(&conn) {
                held.push(input);
                return;
            }
            if let Some(settling) = self.settling.get_mut(&conn) {
                settling.held.push(input);
                return;
            }
            if let Some(blocked) = self.reader_blocked(conn) {
                blocked.held.push(input);
                return;
            }
            // A socket error wakes the blocked write: not held.
            if let (Some(writing), false) = (
                self.writing.get_mut(&conn),
                matches!(input, Input::Reset { .. }),
            ) {
                writing.held.push(input);
                return;
            }
        }
        if let Input::Data { conn, .. } | Input::Closed { conn, .. } | Input::Reset { conn, .. } =
            &input
        {
            let conn = *conn;
            if self.closing.contains(&conn) && !self.by_stream.contains_key(&conn) {
                // HEAD: a departed peer's handler, still reading, gets a
                // line (`update_last_seen` fails: it no longer owns its
                // nick), an EOF or an error, and breaks; `_cleanup_peer`
                // finds no owner to remove, takes the connection out of
                // `self.connections` and closes it (`server.py` ~542-566,
                // 624-652): the departure's own close then finds nothing.
                if matches!(input, Input::Reset { .. }) {
                    self.closing.remove(&conn);
                } else {
                    let ctx = Ctx::Reader(conn);
                    self.then(ctx, vec![Step::Close(conn)], false);
                    self.pump(now, ctx, false, out);
                }
                if let Some(conn) = fail_after {
                    self.fail_writes_to(now, conn, out);
                }
                return;
            }
        }
        match input {
            Input::Start => {
                // Both upstreams serve on a TCP listener.
                out.listen();
                // Python: `while True: await asyncio.sleep(interval); sweep`.
                // Rust: `interval_at(now + 60 s, 60 s)`. Both: first sweep
                // one interval after start.
                self.next_tick = now.mono + self.timers.sweep_interval;
                self.phase = Phase::Sleeping {
                    until: self.next_tick,
                };
            }
            Input::Stop => {
                // Python `stop()` cancels the task and clears pending; Rust
                // breaks out of the loop. Neither evicts anyone.
                self.pending.clear();
                self.phase = Phase::Idle;
            }
            Input::Timeout => self.on_timeout(now, out),
            Input::Data { conn, peer, msg } => self.on_frame(now, conn, peer, msg, out),
            Input::SendDone { token, .. } if self.task_writes.contains_key(&token) => {
                self.task_write_done(now, token, out);
            }
            Input::SendDone { token, result, .. } if self.ng_writes.contains_key(&token) => {
                let failed = result
                    .err()
                    .map(|e| Cow::Owned(format!("send failed: {e}")));
                self.ng_write_done(now, token, failed, out);
            }
            Input::SendDone { token, result, .. } => {
                self.on_send_done(now, token, result.map_err(SendFailure::Net), out);
            }
            // EOF: Python's `readline()` returns b"" and the handler's
            // `finally` runs `_cleanup_peer`; joinmarket-rs's read loop ends
            // and the peer is removed. Both close their end.
            Input::Closed { conn, peer } => {
                self.forget_handshake(conn);
                self.forget_auth(conn);
                let registered = self.lost(now, conn, peer, "peer closed".into(), true, out);
                self.stale_reader_ended(now, conn, "peer closed".into(), out);
                if !registered {
                    out.close(conn);
                }
            }
            // A RST or a retransmission timeout: the read raises (Python
            // `ConnectionResetError`/`TimeoutError`, Rust an `io::Error`),
            // and the same cleanup runs.
            Input::Reset { conn, peer, error } => {
                // joinmarket-rs: the write fails and the task exits; what it
                // had not read yet goes with it.
                if let Some((key, farewell)) = self.writing.remove(&conn).and_then(|w| w.evicted) {
                    self.release(key);
                    if let Some(frame) = farewell {
                        self.task_broadcast(None, &frame, out);
                    }
                }
                self.forget_handshake(conn);
                self.forget_auth(conn);
                self.lost(now, conn, peer, error.to_string().into(), false, out);
                self.stale_reader_ended(now, conn, error.to_string().into(), out);
                if let Some(conn) = fail_after {
                    self.fail_writes_to(now, conn, out);
                }
            }
            // A new connection has `handshake_timeout` to send its
            // handshake, or it is closed.
            Input::Accepted { conn, peer } => {
                let deadline = now.mono + self.profile.handshake_timeout();
                self.awaiting_handshake.insert(conn, (deadline, peer));
                self.handshake_deadlines.insert((deadline, conn));
            }
            // The directory dials nobody.
            Input::Connected { .. } | Input::ConnectFailed { .. } | Input::Recv { .. } => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        let handshake = self.handshake_deadlines.first().map(|&(at, _)| Deadline {
            at,
            reason: "handshake timeout",
        });
        let settle = self.settle_deadlines.first().map(|&(at, _)| Deadline {
            at,
            reason: "handshaked",
        });
        let auth = self.auth_deadlines.first().map(|&(at, _)| Deadline {
            at,
            reason: "nick auth timeout",
        });
        let writes = self.ng_write_deadline().map(|at| Deadline {
            at,
            reason: "send timeout",
        });
        let closes = self.close_bounds.first().map(|&(at, _, _)| Deadline {
            at,
            reason: "close timeout",
        });
        [
            settle,
            handshake,
            auth,
            writes,
            closes,
            self.phase_deadline(),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|d| d.at)
    }

    fn phase_deadline(&self) -> Option<Deadline> {
        match &self.phase {
            Phase::Sleeping { until } => Some(Deadline {
                at: *until,
                reason: "sweep",
            }),
            Phase::Waiting { until, .. } => Some(Deadline {
                at: *until,
                reason: "pong wait",
            }),
            Phase::Probing(sweep) => {
                let timeout = self.profile.send_timeout()?;
                let awaiting = sweep
                    .awaiting
                    .filter(|a| a.started && !self.sweep_blocked())?;
                Some(Deadline {
                    at: awaiting.since + timeout,
                    reason: "send timeout",
                })
            }
            Phase::Idle => None,
        }
    }

    fn on_timeout(&mut self, now: Now, out: &mut Outbox<Frame>) {
        // The 50 ms sleep ends: `update_status(HANDSHAKED)`, then the
        // handler reads what came meanwhile.
        while let Some(&(at, stream)) = self.settle_deadlines.first() {
            if at > now.mono {
                break;
            }
            self.settle_deadlines.pop_first();
            let settling = self
                .settling
                .remove(&stream)
                .expect("a settle deadline has its connection");
            self.register(now, settling.id, out);
            self.read_held(now, settling.held, out);
        }
        self.expire_ng_writes(now, out);
        self.expire_close_bounds(now, out);
        // HEAD: `wait_for(connection.receive(), nick_auth_timeout)` gives
        // up: an `expired` result, then the handler returns and closes.
        while let Some(&(at, stream)) = self.auth_deadlines.first() {
            if at > now.mono {
                break;
            }
            if let Some(auth) = self.forget_auth(stream) {
                out.send(stream, Frame::NickAuthResult(AuthCode::Expired));
                let reason = "nick authentication timed out".into();
                close(out, stream, auth.peer, kind::REJECT, reason);
            }
        }
        // Python `asyncio.wait_for(connection.receive(), timeout=30.0)`
        // (`server.py` `_perform_handshake`), Rust `tokio::time::timeout(
        // HANDSHAKE_TIMEOUT_SECS = 10, ..)` (`peer.rs`): then the handler
        // returns and the connection is closed.
        while let Some(&(at, stream)) = self.handshake_deadlines.first() {
            if at > now.mono {
                break;
            }
            if let Some(peer) = self.forget_handshake(stream) {
                close(out, stream, peer, kind::REJECT, "handshake timeout".into());
            }
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Sleeping { until } if now.mono >= until => self.start_sweep(now, out),
            Phase::Waiting { until, mut sweep } if now.mono >= until => {
                sweep.timed_out = Some(self.timed_out(&sweep));
                self.phase = Phase::Probing(sweep);
                self.probe_next(now, out);
            }
            Phase::Probing(sweep) => {
                let timed_out = match (sweep.awaiting, self.profile.send_timeout()) {
                    (Some(a), Some(timeout)) if a.started && now.mono >= a.since + timeout => {
                        Some(a)
                    }
                    _ => None,
                };
                self.phase = Phase::Probing(sweep);
                if let Some(a) = timed_out {
                    // The bytes stay queued: the write is abandoned, not undone.
                    if let Some(conn) = self.conns.get(&a.conn) {
                        self.undrained.insert(conn.stream, a.token);
                    }
                    self.on_send_done(now, a.token, Err(SendFailure::Timeout), out);
                }
            }
            other => self.phase = other,
        }
    }

    /// Steps 1 and 2 of the sweep, carried on by `probe_next`.
    fn start_sweep(&mut self, now: Now, out: &mut Outbox<Frame>) {
        out.record(kind::SWEEP, None, None, None);
        let t = self.profile.last_seen_clock(now);
        self.phase = Phase::Probing(Sweep {
            t,
            hard: self.idle_since(t, self.timers.hard_evict),
            queue: None,
            timed_out: None,
            awaiting: None,
            pinged: Vec::new(),
        });
        self.probe_next(now, out);
    }

    fn sweep_mut(&mut self) -> &mut Sweep {
        match &mut self.phase {
            Phase::Probing(sweep) => sweep,
            _ => unreachable!("called while probing"),
        }
    }

    /// Heartbeat-eligible connections idle past `threshold` at `t`, in
    /// registration order, with their keys.
    fn idle_since(&self, t: Timestamp, threshold: Duration) -> VecDeque<(ConnId, KeyId)> {
        // Every idle peer has last_seen <= t - threshold; the exact test
        // (strict or not) is the profile's.
        let bound = (t.saturating_sub(threshold), ConnId::MAX);
        let mut due: Vec<ConnId> = self
            .idle_index
            .range(..=bound)
            .filter(|(seen, _)| {
                self.profile
                    .is_idle_past(t.saturating_since(*seen), threshold)
            })
            .map(|(_, id)| *id)
            .collect();
        due.sort_unstable_by_key(|id| self.conns[id].order);
        due.into_iter()
            .map(|id| (id, self.conns[&id].key))
            .collect()
    }

    /// Who a sweep entry stands for when the sweep gets to it: its
    /// connection, if still registered. eb812d4c's sweep holds keys
    /// (`for peer_key, peer_info in ...`, then `evict_callback(peer_key)`,
    /// `get_by_key(peer_key)`, `_send_ping(peer_key)`, `heartbeat.py@eb8`
    /// ~146-173): whoever holds the key by then, a connection that took it
    /// over while the sweep was blocked included.
    fn swept(&self, id: ConnId, key: KeyId) -> Option<ConnId> {
        if self.conns.contains_key(&id) {
            return Some(id);
        }
        if self.profile == Profile::JoinmarketNgEb812d4c {
            return self.by_key.get(&key).copied();
        }
        None
    }

    /// Walk the probe queue until a send must be awaited or the queue is
    /// empty; then wait for PONGs or end the sweep.
    fn probe_next(&mut self, now: Now, out: &mut Outbox<Frame>) {
        let Phase::Probing(sweep) = &self.phase else {
            return;
        };
        if self.sweep_blocked() || sweep.awaiting.is_some() {
            return;
        }
        if sweep.timed_out.is_some() {
            return self.evict_timed_out(now, out);
        }
        // Step 1: hard-evict peers idle past hard_evict; clear pending first.
        while let Some((id, key)) = self.sweep_mut().hard.pop_front() {
            let Some(id) = self.swept(id, key) else {
                continue;
            };
            let conn = &self.conns[&id];
            let pk = self.pending_key(conn.key, id);
            self.pending.remove(&pk);
            self.evict_conn(now, id, "idle timeout".into(), out);
            if self.sweep_blocked() {
                return;
            }
        }
        // Step 2: peers idle past idle_threshold, re-queried after step 1.
        if self.sweep_mut().queue.is_none() {
            let t = self.sweep_mut().t;
            let due = self.idle_since(t, self.timers.idle_threshold);
            self.sweep_mut().queue = Some(due);
        }
        loop {
            let queue = self.sweep_mut().queue.as_mut().expect("built above");
            let Some((id, key)) = queue.pop_front() else {
                break;
            };
            // Skip peers evicted since the queue was built (step 1, or a
            // send failure earlier in this loop).
            let Some(id) = self.swept(id, key) else {
                continue;
            };
            let conn = &self.conns[&id];
            let (stream, node, key, ping) = (conn.stream, conn.node, conn.key, conn.ping);
            if !(ping || conn.maker) {
                // Non-ping taker or watcher: no probe; hard-evicted later.
                continue;
            }
            if self.profile.sends_through_a_channel() {
                // joinmarket-rs `router.send_to_peer` -> `try_send` into the
                // peer's channel, Ok while its task runs; then
                // `add_pong_pending` for a PING (`heartbeat.rs`). The task
                // writes the frame (see `task_write`).
                let frame = if ping {
                    out.record(kind::PING, Some(node), None, None);
                    self.sweep_mut().pinged.push(((key, id), node));
                    self.pending.insert((key, id));
                    Frame::Ping
                } else {
                    out.record(kind::PROBE, Some(node), None, Some("!orderbook".into()));
                    self.probe.clone()
                };
                self.task_write(stream, frame, out);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            if ping && self.profile == Profile::JoinmarketNg {
                // HEAD: `_pong_pending.add(owner)` before the send (and
                // before its lock).
                self.pending.insert((key, id));
            }
            self.sweep_mut().awaiting = Some(Awaiting {
                token,
                conn: id,
                key,
                node,
                stream,
                is_ping: ping,
                since: now.mono,
                started: false,
            });
            if self.lock_write(key, token) {
                let started = self.start_sweep_write(now, token, out);
                debug_assert!(started, "the sweep writes to a current owner");
            }
            return;
        }
        let sweep = self.sweep_mut();
        // Step 3: wait only if at least one PING went out.
        if !sweep.pinged.is_empty() {
            let Phase::Probing(sweep) = std::mem::replace(&mut self.phase, Phase::Idle) else {
                unreachable!("checked above");
            };
            out.record(
                kind::WAIT,
                None,
                None,
                Some(format!("{} pinged", sweep.pinged.len()).into()),
            );
            self.phase = Phase::Waiting {
                until: now.mono + self.timers.pong_wait,
                sweep,
            };
        } else {
            self.end_sweep(now);
        }
    }

    /// The sweep's PING or `!orderbook` probe has its lock (HEAD), or
    /// needs none: write it. False if its peer is no longer its key's
    /// HANDSHAKED owner (`_send_to_peer` raises `ValueError`).
    fn start_sweep_write(&mut self, now: Now, token: u64, out: &mut Outbox<Frame>) -> bool {
        let a = match &self.phase {
            Phase::Probing(s) => s.awaiting.filter(|a| a.token == token),
            _ => None,
        };
        let Some(a) = a else {
            return false;
        };
        if !self.is_current(a.conn) {
            return false;
        }
        let conn = &self.conns[&a.conn];
        let (node, stream) = (conn.node, conn.stream);
        let frame = if a.is_ping {
            out.record(kind::PING, Some(node), None, None);
            Frame::Ping
        } else {
            out.record(kind::PROBE, Some(node), None, Some("!orderbook".into()));
            self.probe.clone()
        };
        if let Phase::Probing(Sweep {
            awaiting: Some(a), ..
        }) = &mut self.phase
        {
            a.since = now.mono;
            a.started = true;
        }
        out.send_awaited(stream, frame, token);
        true
    }

    /// HEAD: the sweep's write, granted its lock, found its peer gone:
    /// `_send_ping` catches the `ValueError`, discards the pending PONG and
    /// calls `_evict_peer`, which finds no owner (a probe's failure is only
    /// logged). The sweep goes on.
    fn stale_sweep_write(&mut self, token: u64) {
        let Phase::Probing(sweep) = &mut self.phase else {
            return;
        };
        let Some(a) = sweep.awaiting.filter(|a| a.token == token) else {
            return;
        };
        sweep.awaiting = None;
        if a.is_ping {
            let pk = self.pending_key(a.key, a.conn);
            self.pending.remove(&pk);
        }
    }

    fn on_send_done(
        &mut self,
        now: Now,
        token: u64,
        result: Result<(), SendFailure>,
        out: &mut Outbox<Frame>,
    ) {
        let awaited = matches!(&self.phase,
            Phase::Probing(s) if s.awaiting.is_some_and(|a| a.token == token));
        if !awaited {
            // HEAD: a write abandoned on timeout drained at last.
            let drained = self.undrained.iter().find(|&(_, &t)| t == token);
            if let Some((&stream, _)) = drained {
                self.undrained.remove(&stream);
                self.drained(now, stream, out);
            }
            return;
        }
        let Phase::Probing(sweep) = &mut self.phase else {
            return;
        };
        let Some(Awaiting {
            token: want,
            conn: id,
            key,
            node,
            stream,
            is_ping,
            ..
        }) = sweep.awaiting
        else {
            return;
        };
        if want != token {
            return; // a write abandoned on timeout, completing late
        }
        sweep.awaiting = None;
        self.write_over(now, stream, out);
        // HEAD: the lock goes before the outcome reaches `_send_ping`.
        self.unlock(now, key, token, out);
        if !is_ping {
            // `!orderbook` failures are logged only, in every profile.
            if let (Err(e), Some(conn)) = (result, self.conns.get(&id)) {
                out.record(kind::SEND_ERROR, Some(conn.node), Some(e.log_text()), None);
            }
            return self.probe_next(now, out);
        }
        if self.profile == Profile::JoinmarketNgEb812d4c {
            return self.eb812d4c_pinged(now, key, node, result, out);
        }
        let Some(conn) = self.conns.get(&id) else {
            return self.probe_next(now, out);
        };
        let node = conn.node;
        let pk = self.pending_key(conn.key, id);
        // What the sweep adds to its pinged list.
        let pinged = match (self.profile, result) {
            (Profile::JoinmarketRs, _) => unreachable!("joinmarket-rs never awaits a send"),
            (Profile::JoinmarketNg, Ok(())) => Some(pk),
            (Profile::JoinmarketNg, Err(e)) => {
                self.pending.remove(&pk);
                self.evict_conn(now, id, format!("send failed: {e}").into(), out);
                None
            }
            (Profile::JoinmarketNgEb812d4c, _) => unreachable!("by key, above"),
        };
        if let (Some(pk), Phase::Probing(sweep)) = (pinged, &mut self.phase) {
            sweep.pinged.push((pk, node));
        }
        self.probe_next(now, out);
    }

    /// eb812d4c's PING returned: the rest of `_sweep`'s loop body works on
    /// the key, whoever holds it now (`heartbeat.py@eb8` ~165-169,
    /// 195-205): on a failure `evict_callback(peer_key, "send failed:
    /// ...")`, which `_send_ping` swallows; then, failed or not,
    /// `_pong_pending.add(peer_key)` and `pinged_keys.append(peer_key)`, so a
    /// failed peer is evicted a second time after the wait, and a
    /// connection that took the key over meanwhile is evicted for a PING it
    /// never got.
    fn eb812d4c_pinged(
        &mut self,
        now: Now,
        key: KeyId,
        node: NodeId,
        result: Result<(), SendFailure>,
        out: &mut Outbox<Frame>,
    ) {
        let pk = (key, 0);
        if let Err(e) = result {
            self.pending.remove(&pk);
            if let Some(&owner) = self.by_key.get(&key) {
                self.evict_conn(now, owner, format!("send failed: {e}").into(), out);
            }
        }
        self.pending.insert(pk);
        if let Phase::Probing(sweep) = &mut self.phase {
            sweep.pinged.push((pk, node));
        }
        self.probe_next(now, out);
    }

    /// Step 4's list, when the PONG wait ends. joinmarket-rs:
    /// `collect_pong_timeouts`, every peer whose flag is still set;
    /// joinmarket-ng: `timed_out = [o for o in pinged_owners if o in
    /// pending]`.
    fn timed_out(&mut self, sweep: &Sweep) -> VecDeque<(PendingKey, NodeId)> {
        match self.profile {
            Profile::JoinmarketRs => {
                let flagged: BTreeSet<ConnId> = self
                    .pending
                    .iter()
                    .map(|(_, id)| *id)
                    .filter(|id| self.conns.contains_key(id))
                    .collect();
                self.pending.clear();
                flagged
                    .into_iter()
                    .map(|id| ((self.conns[&id].key, id), self.conns[&id].node))
                    .collect()
            }
            Profile::JoinmarketNg | Profile::JoinmarketNgEb812d4c => sweep
                .pinged
                .iter()
                .filter(|(pk, _)| self.pending.contains(pk))
                .copied()
                .collect(),
        }
    }

    /// Step 4, one eviction at a time: each may await its broadcast and
    /// close (joinmarket-ng), which holds the rest.
    fn evict_timed_out(&mut self, now: Now, out: &mut Outbox<Frame>) {
        loop {
            let next = match &mut self.phase {
                Phase::Probing(Sweep {
                    timed_out: Some(q), ..
                }) => q.pop_front(),
                _ => return,
            };
            let Some(((key, conn_id), node)) = next else {
                return self.end_sweep(now);
            };
            match self.profile {
                Profile::JoinmarketRs => {
                    self.evict_conn(now, conn_id, "pong timeout".into(), out);
                }
                Profile::JoinmarketNg => {
                    self.pending.remove(&(key, conn_id));
                    // HEAD's `_evict_peer` returns unless the connection is
                    // still the key's current owner.
                    if self.by_key.get(&key) == Some(&conn_id) {
                        self.evict_conn(now, conn_id, "pong timeout".into(), out);
                    }
                }
                Profile::JoinmarketNgEb812d4c => {
                    self.pending.remove(&(key, conn_id));
                    // eb812d4c evicts by key: whoever owns it now, even a
                    // connection made after the PING went out.
                    match self.by_key.get(&key).copied() {
                        Some(owner) => self.evict_conn(now, owner, "pong timeout".into(), out),
                        None => out.record(
                            kind::EVICT,
                            Some(node),
                            Some("pong timeout".into()),
                            Some(kind::NO_CONNECTION.into()),
                        ),
                    }
                }
            }
            if self.sweep_blocked() {
                return;
            }
        }
    }

    fn end_sweep(&mut self, now: Now) {
        let until = if self.profile == Profile::JoinmarketRs {
            // `interval_at` keeps its grid; `MissedTickBehavior::Burst`
            // fires missed ticks at once.
            self.next_tick += self.timers.sweep_interval;
            self.next_tick.max(now.mono)
        } else {
            now.mono + self.timers.sweep_interval
        };
        self.phase = Phase::Sleeping { until };
    }

    fn on_frame(
        &mut self,
        now: Now,
        stream: StreamId,
        from: NodeId,
        frame: Frame,
        out: &mut Outbox<Frame>,
    ) {
        let Some(&id) = self.by_stream.get(&stream) else {
            if self.authenticating.contains_key(&stream) {
                return self.on_auth_frame(now, stream, frame, out);
            }
            if let Some(&(key, _)) = self.stale_readers.get(&stream) {
                return self.on_stale_frame(now, stream, key, from, frame, out);
            }
            if self.forget_handshake(stream).is_none() {
                // After the connection was dropped from the registry (a
                // rejection or eviction closed it): ignored.
                return;
            }
            if let Frame::Handshake {
                nick,
                location,
                ping,
                directory,
                nick_auth,
            } = frame
            {
                let features = Features {
                    ping,
                    directory,
                    nick_auth,
                };
                self.on_handshake(now, stream, from, &nick, &location, features, out);
            } else {
                // The first line must be a handshake: Python "Expected
                // handshake, got ..." returns None, Rust "Expected handshake
                // type 793" returns; both close the connection.
                close(
                    out,
                    stream,
                    from,
                    kind::REJECT,
                    "expected a handshake".into(),
                );
            }
            return;
        };
        // Every line refreshes last_seen before it is parsed.
        self.touch(id, now);
        // HEAD parses, then rate-limits: a malformed line disconnects
        // whatever the bucket holds (`server.py` ~568-589); eb812d4c
        // rate-limits first (`server.py@eb8` ~285, the parse at ~312), so a
        // malformed line without a token is dropped.
        let parsed_first = self.profile == Profile::JoinmarketNg && frame == Frame::Malformed;
        if self.profile.is_ng() && !parsed_first && !self.rate_allows(id, now) {
            return;
        }
        match frame {
            Frame::Pong => {
                let pk = self.pending_key(self.conns[&id].key, id);
                let reason = if self.pending.remove(&pk) {
                    "cleared"
                } else {
                    "unsolicited"
                };
                out.record(kind::PONG, Some(from), Some(reason.into()), None);
            }
            Frame::Ping => {
                if self.over_rate(now, id, RateLimit::Ping, out) {
                    return;
                }
                if self.profile.sends_through_a_channel() {
                    // The task answers inline (`handle_message(.., &mut
                    // writer)`): a write like any other.
                    self.task_write(stream, Frame::Pong, out);
                } else {
                    let ctx = Ctx::Reader(stream);
                    self.then(ctx, vec![Step::Pong(id)], false);
                    self.pump(now, ctx, false, out);
                }
            }
            // joinmarket-rs counts `!orderbook` in its own bucket and every
            // other PUBMSG, unparseable ones too, in the general one
            // (`peer.rs` ~604-640) and does not relay here (its channel
            // broadcast is not modelled); joinmarket-ng relays to every
            // other registered peer (`awaits.rs`).
            Frame::PubMsg(ref line) => {
                let limit = if line.ends_with("!orderbook") {
                    RateLimit::Orderbook
                } else {
                    RateLimit::PubMsg
                };
                if self.over_rate(now, id, limit, out) {
                    return;
                }
                let key = self.conns[&id].key;
                if self.profile.is_ng() {
                    self.relay(now, stream, key, frame, out);
                } else if self.broadcasts {
                    // `broadcast_pubmsg` -> `router.broadcast`: every
                    // other task writes it (`channel.rs`).
                    self.task_broadcast(Some(key), &frame, out);
                }
            }
            Frame::Malformed if self.profile.is_ng() => {
                // Python parses after stamping `last_seen`: the envelope
                // raises, `except Exception: ... break`, and the handler's
                // `finally` runs `_cleanup_peer` (HEAD `server.py`
                // `_handle_peer_messages`; eb812d4c the same loop).
                // joinmarket-rs logs the bad line and reads on.
                let record = (kind::DISCONNECT, "malformed line".into(), None);
                self.depart(now, Ctx::Reader(stream), id, record, true, out);
            }
            Frame::Malformed
            | Frame::Handshake { .. }
            | Frame::HandshakeReply { .. }
            | Frame::NickAuthChallenge
            | Frame::NickAuthProof
            | Frame::NickAuthResult(_)
            | Frame::PeerList { .. } => {}
        }
    }

    /// joinmarket-rs's per-peer sliding windows: `while front < now - 60 s:
    /// pop`, then `len >= limit` disconnects (so a line exactly 60 s old
    /// still counts). True if the peer was disconnected.
    fn over_rate(
        &mut self,
        now: Now,
        id: ConnId,
        limit: RateLimit,
        out: &mut Outbox<Frame>,
    ) -> bool {
        let Some(max) = self.profile.rate_limit(limit) else {
            return false;
        };
        let t = now.mono;
        let conn = self.conns.get_mut(&id).expect("a live conn");
        let window = &mut conn.recent[limit as usize];
        let cutoff = t.saturating_sub(RateLimit::WINDOW);
        while window.front().is_some_and(|&p| p < cutoff) {
            window.pop_front();
        }
        if window.len() >= max {
            let node = conn.node;
            let reason = limit.reason().into();
            out.record(kind::DISCONNECT, Some(node), Some(reason), None);
            self.task_ends(id, true, out);
            return true;
        }
        window.push_back(t);
        false
    }

    #[allow(clippy::too_many_arguments)]
    fn on_handshake(
        &mut self,
        now: Now,
        stream: StreamId,
        from: NodeId,
        nick: &Arc<str>,
        location: &Arc<str>,
        features: Features,
        out: &mut Outbox<Frame>,
    ) {
        let Features {
            ping,
            directory,
            nick_auth,
        } = features;
        let names = (nick.clone(), location.clone());
        let location = self.profile.parse_location(nick, location);
        let rejection = match &location {
            _ if directory => Some(Cow::Borrowed(self.profile.directory_rejection())),
            Location::Rejected(why) => Some(Cow::Owned(why.clone())),
            _ => None,
        };
        if let Some(reason) = rejection {
            close(out, stream, from, kind::REJECT, reason);
            return;
        }
        let key = self.intern(self.profile.registry_key(nick, &location));
        let maker = matches!(location, Location::Maker(_));
        if let Some(auth) = self.nick_auth {
            // `process_handshake`: under REQUIRE_VERIFIED a peer that does
            // not negotiate is answered `accepted: false`, "Rejected:
            // verified nick authentication required", and closed.
            if auth.require && !nick_auth {
                out.send(stream, Frame::HandshakeReply { accepted: false });
                let reason = "verified nick authentication required".into();
                close(out, stream, from, kind::REJECT, reason);
                return;
            }
            // `negotiates_nick_auth`: the reply, then the challenge, then
            // the proof is awaited; nothing is registered yet (`server.py`
            // ~257-268, `_perform_nick_auth`).
            if nick_auth {
                out.send(stream, Frame::HandshakeReply { accepted: true });
                out.send(stream, Frame::NickAuthChallenge);
                let deadline = now.mono + auth.timeout;
                self.authenticating.insert(
                    stream,
                    Authenticating {
                        deadline,
                        peer: from,
                        nick: nick.clone(),
                        location: names.1.clone(),
                        key,
                        ping,
                        maker,
                    },
                );
                self.auth_deadlines.insert((deadline, stream));
                return;
            }
        }
        // HEAD's `_register_peer` takes the nick's lock: behind a write to
        // the nick's owner, the handshake waits, reading nothing.
        if self.lock_busy(key) {
            self.registering.insert(stream, Vec::new());
            let registering = Registering {
                stream,
                from,
                nick: nick.clone(),
                location: names.1.clone(),
                features,
            };
            self.lock_wait(key, Want::Register(Box::new(registering)));
            return;
        }
        // eb812d4c overwrites a held key when it registers, after its sleep
        // (see `register`); the others refuse the duplicate now.
        let held = self.by_key.contains_key(&key) || self.reserved.contains(&key);
        if held && !self.profile.replaces_duplicate_key() {
            let (reason, reply) = self.profile.duplicate_rejection(nick);
            if reply {
                out.send(stream, Frame::HandshakeReply { accepted: false });
            }
            close(out, stream, from, kind::REJECT, reason.into());
            return;
        }
        // joinmarket-rs admission layer 2, makers only: one nick per onion
        // host (`sybil_guard.rs` `register`, `admission.rs` ~82-88); the
        // rejection is logged and the connection dropped without a reply.
        let host = match &location {
            Location::Maker(loc) if self.profile.sybil_guard() => {
                let host: Arc<str> = loc.split(':').next().unwrap_or(loc).into();
                if self.onion_hosts.get(&host).is_some_and(|&k| k != key) {
                    let reason =
                        "sybil guard rejected: onion address already has an active registration";
                    close(out, stream, from, kind::REJECT, reason.into());
                    return;
                }
                Some(host)
            }
            _ => None,
        };
        if let Some(host) = host {
            self.onion_hosts.insert(host, key);
        }
        let id = self.new_conn(now, stream, from, key, ping, maker, None, names);
        // Every upstream answers an accepted handshake with one line
        // (`DN_HANDSHAKE`, type 795): Python `server.py` `connection.send(
        // response_bytes)`, Rust `send_dn_handshake`.
        out.send(stream, Frame::HandshakeReply { accepted: true });
        match self.profile.handshaked_after() {
            None => self.register(now, id, out),
            Some(sleep) => {
                if !self.profile.replaces_duplicate_key() {
                    // HEAD reserves the nick before it answers
                    // (`_register_peer`, `server.py` ~304), with status
                    // CONNECTED: not swept until HANDSHAKED.
                    self.by_key.insert(key, id);
                }
                let until = now.mono + sleep;
                self.settling.insert(
                    stream,
                    Settling {
                        id,
                        held: Vec::new(),
                    },
                );
                self.settle_deadlines.insert((until, stream));
            }
        }
    }

    /// A handler that did not read for a while (asleep, awaiting a write,
    /// waiting for a lock) reads what came meanwhile, in order. asyncio's
    /// `readuntil` raises a stored connection error before it reads its
    /// buffer (`_wait_for_data` checks `_exception` first): after a reset,
    /// the lines that came before it are never read. An EOF comes after
    /// them.
    fn read_held(&mut self, now: Now, held: Vec<Input<Frame>>, out: &mut Outbox<Frame>) {
        let reset = held.iter().any(|i| matches!(i, Input::Reset { .. }));
        for input in held {
            if reset && matches!(input, Input::Data { .. }) {
                continue;
            }
            self.handle(now, input, out);
        }
    }

    /// A connection entry for a handshake the directory accepts.
    #[allow(clippy::too_many_arguments)]
    fn new_conn(
        &mut self,
        now: Now,
        stream: StreamId,
        node: NodeId,
        key: KeyId,
        ping: bool,
        maker: bool,
        verified: Option<NodeId>,
        (nick, location): (Arc<str>, Arc<str>),
    ) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                node,
                stream,
                key,
                ping,
                maker,
                last_seen: self.profile.last_seen_clock(now),
                recent: Default::default(),
                order: id,
                verified,
                nick,
                location,
                bucket: None,
            },
        );
        self.by_stream.insert(stream, id);
        id
    }

    /// joinmarket-ng's message rate limiter, per connection
    /// (`jmcore/rate_limiter.py` `TokenBucket.consume`: refill
    /// `elapsed * rate` up to the capacity, then take one token;
    /// `DirectoryServerSettings` `message_rate_limit = 500`,
    /// `message_burst_limit = 1000`, no disconnect threshold). A line
    /// without a token is dropped after it stamped `last_seen` (`server.py`
    /// ~589-614: `DELAY` -> `continue`). Exact in micro-tokens.
    fn rate_allows(&mut self, id: ConnId, now: Now) -> bool {
        const TOKEN: u64 = 1_000_000;
        const CAPACITY: u64 = 1000 * TOKEN;
        const PER_US: u64 = 500; // 500 tokens a second
        let t = now.mono;
        let conn = self.conns.get_mut(&id).expect("a live conn");
        let (tokens, last) = conn.bucket.get_or_insert((CAPACITY, t));
        let elapsed = t.saturating_since(*last).as_us();
        *last = t;
        *tokens = tokens
            .saturating_add(elapsed.saturating_mul(PER_US))
            .min(CAPACITY);
        if *tokens >= TOKEN {
            *tokens -= TOKEN;
            true
        } else {
            false
        }
    }

    /// HEAD: a line on a connection awaiting its nick-authentication proof.
    /// A proof (always valid here) registers the peer as verified: it
    /// replaces an unverified owner of the nick, or a verified one with the
    /// same pubkey, whose connection is closed and pending PONG forgotten
    /// (`peer_registry.py` `register` ~75-92, `server.py`
    /// `_activate_registration`, `_close_displaced_connections`); then the
    /// `ok` result and HANDSHAKED, with no 50 ms sleep on this path
    /// (`server.py` ~269-296). Any other line is `malformed`. The
    /// registration takes the nick's lock: it waits for writes to the
    /// owner it may displace.
    fn on_auth_frame(&mut self, now: Now, stream: StreamId, frame: Frame, out: &mut Outbox<Frame>) {
        let auth = self.forget_auth(stream).expect("checked by the caller");
        if frame != Frame::NickAuthProof {
            out.send(stream, Frame::NickAuthResult(AuthCode::Malformed));
            let reason = "nick authentication payload was malformed".into();
            close(out, stream, auth.peer, kind::REJECT, reason);
            return;
        }
        // `_register_peer` with the pubkey, under the nick's lock.
        if self.lock_busy(auth.key) {
            self.registering.insert(stream, Vec::new());
            self.lock_wait(auth.key, Want::Verified(stream, Box::new(auth)));
            return;
        }
        self.on_proof(now, stream, auth, out);
    }

    /// HEAD: a valid proof, under the nick's lock: the verified
    /// registration (see [`Self::on_auth_frame`]).
    fn on_proof(
        &mut self,
        now: Now,
        stream: StreamId,
        auth: Authenticating,
        out: &mut Outbox<Frame>,
    ) {
        if let Some(&owner) = self.by_key.get(&auth.key) {
            let old = &self.conns[&owner];
            if old.verified.is_some_and(|k| k != auth.peer) {
                // Only another node could prove another key: simulated
                // nodes never share a nick.
                let reason = format!("Verified nick already registered: {}", auth.nick);
                close(out, stream, auth.peer, kind::REJECT, reason.into());
                return;
            }
            let (old_stream, old_node) = (old.stream, old.node);
            let was_handshaked = self.idle_index.contains(&(old.last_seen, owner));
            let entry = self.departure_entry(owner);
            let pk = self.pending_key(auth.key, owner);
            self.pending.remove(&pk);
            if self.settling.remove(&old_stream).is_some() {
                self.settle_deadlines.retain(|&(_, s)| s != old_stream);
            }
            out.record(
                kind::DISCONNECT,
                Some(old_node),
                Some("displaced by a verified registration".into()),
                None,
            );
            self.unregister(owner);
            // `_close_displaced_connections`: the departure's broadcast
            // (only if it was HANDSHAKED), then its close, given up after
            // min(nick_auth_timeout, 5 s); then the `ok` result and
            // HANDSHAKED.
            let mut steps = Vec::new();
            if was_handshaked && self.broadcasts {
                steps.extend(Self::broadcast(entry, self.registered_except(auth.key)));
            }
            let bound = self
                .nick_auth
                .map_or(Duration::from_secs(5), |a| a.timeout)
                .min(Duration::from_secs(5));
            steps.push(Step::CloseWithin(old_stream, bound));
            // Its handler still reads: a line from it meanwhile makes it
            // close the connection itself (see `handle`), and then
            // `_close_displaced_connections` finds it gone (~476-477).
            self.closing.insert(old_stream);
            let id = self.new_verified(now, stream, &auth);
            steps.push(Step::Handshaked(id));
            let ctx = Ctx::Reader(stream);
            self.then(ctx, steps, false);
            return self.pump(now, ctx, false, out);
        }
        let id = self.new_verified(now, stream, &auth);
        out.send(stream, Frame::NickAuthResult(AuthCode::Ok));
        self.register(now, id, out);
    }

    /// The connection entry of a verified registration, its nick reserved.
    fn new_verified(&mut self, now: Now, stream: StreamId, auth: &Authenticating) -> ConnId {
        let names = (auth.nick.clone(), auth.location.clone());
        let id = self.new_conn(
            now,
            stream,
            auth.peer,
            auth.key,
            auth.ping,
            auth.maker,
            Some(auth.peer),
            names,
        );
        self.by_key.insert(auth.key, id);
        id
    }

    fn forget_auth(&mut self, stream: StreamId) -> Option<Authenticating> {
        let auth = self.authenticating.remove(&stream)?;
        self.auth_deadlines.remove(&(auth.deadline, stream));
        Some(auth)
    }

    /// The connection becomes a registered, swept peer: joinmarket-rs right
    /// after its reply (`register_peer_meta`, `peer.rs` ~335, `last_seen:
    /// Instant::now()`); joinmarket-ng when `update_status(HANDSHAKED)`
    /// stamps `last_seen` (`peer_registry.py` `update_status`), 50 ms
    /// after the reply.
    fn register(&mut self, now: Now, id: ConnId, out: &mut Outbox<Frame>) {
        let key = self.conns[&id].key;
        if let Some(&owner) = self.by_key.get(&key).filter(|&&o| o != id) {
            // eb812d4c: `self._peers[key] = peer` overwrites the entry in
            // place; the old connection stays open and its reader keeps the
            // key (`peer_registry.py@eb8` `register`, ~25-37).
            let old = self.conns.remove(&owner).expect("owner is live");
            self.idle_index.remove(&(old.last_seen, owner));
            self.by_stream.remove(&old.stream);
            self.stale_readers.insert(old.stream, (key, old.node));
            self.conns
                .get_mut(&id)
                .expect("registering a live conn")
                .order = old.order;
        }
        self.by_key.insert(key, id);
        let last_seen = self.profile.last_seen_clock(now);
        let conn = self.conns.get_mut(&id).expect("registering a live conn");
        conn.last_seen = last_seen;
        self.idle_index.insert((last_seen, id));
        let role = if conn.maker { "maker" } else { "taker" };
        let features = if conn.ping { " ping" } else { "" };
        let verified = if conn.verified.is_some() {
            " verified"
        } else {
            ""
        };
        out.record(
            kind::REGISTER,
            Some(conn.node),
            None,
            Some(Cow::Owned(format!("{role}{features}{verified}"))),
        );
    }

    /// eb812d4c: a line on a connection whose key was taken over. Upstream
    /// acts on the key, whoever holds it now (`server.py@eb8`
    /// `_handle_peer_messages` ~276-316, `message_router.py@eb8`
    /// `route_message`).
    fn on_stale_frame(
        &mut self,
        now: Now,
        stream: StreamId,
        key: KeyId,
        from: NodeId,
        frame: Frame,
        out: &mut Outbox<Frame>,
    ) {
        // `update_last_seen(peer_key)` refreshes the key's current entry.
        let owner = self.by_key.get(&key).copied();
        if let Some(owner) = owner {
            self.touch(owner, now);
        }
        match frame {
            // `_handle_pong(from_key)`: the key's pending PONG is cleared.
            Frame::Pong => {
                let reason = if self.pending.remove(&(key, 0)) {
                    "cleared"
                } else {
                    "unsolicited"
                };
                out.record(kind::PONG, Some(from), Some(reason.into()), None);
            }
            // `_handle_ping` answers through `send_callback(from_key)`,
            // which writes to the connection the key maps to now, and the
            // handler awaits it (`message_router.py@eb8` ~264-270); with no
            // mapping it raises and the PONG is dropped.
            Frame::Ping => {
                if let Some(owner) = owner {
                    let ctx = Ctx::Reader(stream);
                    self.then(ctx, vec![Step::Pong(owner)], false);
                    self.pump(now, ctx, false, out);
                }
            }
            Frame::Malformed => {
                self.stale_reader_ended(now, stream, "malformed line".into(), out);
                out.close(stream);
            }
            // `_handle_public_message(from_key)`: relayed as from the key's
            // current entry, if there is one.
            Frame::PubMsg(_) if owner.is_some() => self.relay(now, stream, key, frame, out),
            Frame::PubMsg(_)
            | Frame::Handshake { .. }
            | Frame::HandshakeReply { .. }
            | Frame::NickAuthChallenge
            | Frame::NickAuthProof
            | Frame::NickAuthResult(_)
            | Frame::PeerList { .. } => {}
        }
    }

    /// eb812d4c: a stale reader's loop ended. Its `_cleanup_peer` unregisters
    /// its key (`server.py@eb8` ~340-361), removing whoever holds it now,
    /// whose connection stays open and whose reader goes on under a key it
    /// no longer holds: it is never swept again.
    fn stale_reader_ended(
        &mut self,
        now: Now,
        stream: StreamId,
        reason: Cow<'static, str>,
        out: &mut Outbox<Frame>,
    ) {
        let Some((key, _)) = self.stale_readers.remove(&stream) else {
            return;
        };
        let Some(&owner) = self.by_key.get(&key) else {
            return;
        };
        let conn = &self.conns[&owner];
        // Its reader goes on under the key (it looks the key up when it
        // needs it); the key's entry goes after the broadcast.
        self.stale_readers.insert(conn.stream, (key, conn.node));
        let record = (kind::DISCONNECT, reason, Some(kind::LEFT_OPEN.into()));
        self.depart(now, Ctx::Reader(stream), owner, record, false, out);
    }

    fn intern(&mut self, key: Arc<str>) -> KeyId {
        let next = KeyId::try_from(self.key_ids.len()).expect("fewer than 2^32 keys");
        *self.key_ids.entry(key).or_insert(next)
    }

    fn touch(&mut self, id: ConnId, now: Now) {
        let t = self.profile.last_seen_clock(now);
        let conn = self.conns.get_mut(&id).expect("touch of a live conn");
        self.idle_index.remove(&(conn.last_seen, id));
        self.idle_index.insert((t, id));
        conn.last_seen = t;
    }

    /// Evict a connection: joinmarket-rs at once (or, while its task is
    /// inside a write, its metadata only); joinmarket-ng with the
    /// departure's broadcast and close, which the sweep awaits.
    fn evict_conn(
        &mut self,
        now: Now,
        id: ConnId,
        reason: Cow<'static, str>,
        out: &mut Outbox<Frame>,
    ) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (stream, key) = (conn.stream, conn.key);
        if self.writing.contains_key(&stream) {
            // joinmarket-rs: the metadata goes now, the task later.
            out.record(kind::EVICT, Some(conn.node), Some(reason), None);
            let farewell = self.task_farewell(id);
            let writing = self.writing.get_mut(&stream).expect("just seen");
            writing.evicted = Some((key, farewell));
            self.reserved.insert(key);
            self.unregister(id);
            return;
        }
        self.depart(now, Ctx::Sweep, id, (kind::EVICT, reason, None), true, out);
    }

    /// joinmarket-rs `admission.release_peer`: the nick and its onion are
    /// free again.
    fn release(&mut self, key: KeyId) {
        self.reserved.remove(&key);
        self.onion_hosts.retain(|_, k| *k != key);
    }

    /// Stop waiting for `stream`'s handshake; its peer, if it was awaited.
    fn forget_handshake(&mut self, stream: StreamId) -> Option<NodeId> {
        let (deadline, peer) = self.awaiting_handshake.remove(&stream)?;
        self.handshake_deadlines.remove(&(deadline, stream));
        Some(peer)
    }

    /// The peer's connection ended under the directory (EOF, reset, time
    /// out): if it was registered, it is cleaned up like a disconnect.
    fn lost(
        &mut self,
        now: Now,
        stream: StreamId,
        peer: NodeId,
        reason: Cow<'static, str>,
        close_it: bool,
        out: &mut Outbox<Frame>,
    ) -> bool {
        let Some(&id) = self.by_stream.get(&stream) else {
            return false;
        };
        let _ = peer;
        let ctx = Ctx::Reader(stream);
        self.depart(
            now,
            ctx,
            id,
            (kind::DISCONNECT, reason, None),
            close_it,
            out,
        );
        true
    }

    /// Remove a connection from the registry. Where pending is per
    /// connection it goes too (HEAD's `forget_owner`; Rust drops the peer
    /// meta with its flag); eb812d4c leaves the key in `_pong_pending`.
    fn unregister(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if self.profile.pending_per_connection() {
            self.pending.remove(&(conn.key, id));
        }
        self.idle_index.remove(&(conn.last_seen, id));
        self.by_stream.remove(&conn.stream);
        if self.by_key.get(&conn.key) == Some(&id) {
            self.by_key.remove(&conn.key);
            // `admission.release_peer` -> `sybil_guard.deregister(nick)`,
            // unless an evicted task still holds the nick.
            if !self.reserved.contains(&conn.key) {
                self.onion_hosts.retain(|_, k| *k != conn.key);
            }
        }
    }
}

/// What a handshake advertises.
#[derive(Clone, Copy, Debug)]
pub(super) struct Features {
    ping: bool,
    directory: bool,
    nick_auth: bool,
}

/// Record why the directory drops `node`'s connection, and close it.
fn close(
    out: &mut Outbox<Frame>,
    stream: StreamId,
    node: NodeId,
    kind: &'static str,
    reason: Cow<'static, str>,
) {
    out.record(kind, Some(node), Some(reason), None);
    out.close(stream);
}

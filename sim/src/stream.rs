//! The stream medium: TCP-like connections between nodes, beside datagrams.
//!
//! A connection is two endpoints, one on each node, named by one
//! [`ConnId`] unique in the run. What a machine writes on a connection
//! reaches the other end's machine once, in order, or not at all; nothing
//! written on one connection is ever handed to another. Underneath, every
//! packet (SYN, SYN-ACK, ACK, data segment, FIN, RST) crosses the simulated
//! network like a datagram: it may be lost, delayed or cut off by a
//! partition, and loss is repaired by retransmission on Linux's timer rules.
//! The exact rules, with where each comes from, are in `docs/streams.md`;
//! in short:
//!
//! - **RTO** (`net/ipv4/tcp_input.c` `tcp_rtt_estimator`, `__tcp_set_rto`):
//!   RFC 6298's SRTT/RTTVAR from the connection's own round trips, with
//!   Linux's 200 ms floor on the variance term: the first sample R gives
//!   `RTO = R + max(2R, 200 ms)`; 1 s before any sample
//!   (`TCP_TIMEOUT_INIT`). TCP timestamps are on (Linux's default), so every
//!   ACK that advances carries a sample, retransmitted or not. Each expiry
//!   doubles the RTO (`tcp_retransmit_timer`), capped at 120 s
//!   (`TCP_RTO_MAX`); a new sample resets it.
//! - **Giving up** (`tcp_write_timeout`, `retransmits_timed_out`,
//!   `tcp_model_timeout`): at an expiry, a connection whose oldest
//!   unacknowledged segment was first sent at least `model(15, 200 ms)` =
//!   924.6 s ago is dropped with `ETIMEDOUT` (no RST is sent); a connect,
//!   `model(6, 1 s)` = 127 s after its first SYN.
//! - **Head-of-line blocking**: segments are delivered to the machine in
//!   order; one that arrives after a gap waits for the gap to be filled.
//! - **Endings**: `close` sends a FIN after what was written; new data that
//!   reaches a closed endpoint is answered with a RST (`tcp_rcv_state_process`,
//!   `LINUX_MIB_TCPABORTONDATA`); a packet for a connection its host does not
//!   know (the process is gone, or the host rebooted) is answered with a RST;
//!   a SYN to a node that does not listen, too (connection refused).
//!
//! Left out: congestion control and windows (every segment goes out at
//! once), Nagle, delayed ACKs, fast retransmit and RACK-TLP (only the RTO
//! repairs loss), SYN-ACK retransmission by the server (the client's SYN
//! retransmission stands in), TIME_WAIT, keepalive (off by default, and
//! upstreams leave it off).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::engine::Input;
use crate::time::{Duration, Timestamp};
use crate::trace::kind;
use crate::NodeId;

/// One connection, the same id at both ends; unique in the run.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Where a write goes: a datagram to a node, or a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    Node(NodeId),
    Conn(ConnId),
}

impl From<NodeId> for Dest {
    fn from(n: NodeId) -> Dest {
        Dest::Node(n)
    }
}
impl From<ConnId> for Dest {
    fn from(c: ConnId) -> Dest {
        Dest::Conn(c)
    }
}

/// How a connection failed, as the socket reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// `ECONNREFUSED`: a RST answered the SYN (nobody listens there).
    #[error("connection refused")]
    Refused,
    /// `ETIMEDOUT`: SYN or data retransmissions ran out.
    #[error("connection timed out")]
    TimedOut,
    /// `ECONNRESET`: a RST arrived.
    #[error("connection reset")]
    Reset,
}

/// Linux's defaults (`include/net/tcp.h`, `Documentation/networking/
/// ip-sysctl.rst`). Overridable per scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// `TCP_TIMEOUT_INIT`: the RTO before the first RTT sample (RFC 6298 2.1).
    pub rto_initial: Duration,
    /// `TCP_RTO_MIN`: the floor of the variance term, and the base of the
    /// retransmission-timeout model.
    pub rto_min: Duration,
    /// `TCP_RTO_MAX`.
    pub rto_max: Duration,
    /// `net.ipv4.tcp_retries2`.
    pub retries2: u32,
    /// `net.ipv4.tcp_syn_retries`.
    pub syn_retries: u32,
    /// How many bytes a connection holds that its reader has not read
    /// before a blocking write waits (a `stall`): the receiver's socket
    /// buffer (`tcp_rmem` default 131072), the sender's (`tcp_wmem` default
    /// 16384) and the writer's own buffer up to its high-water mark
    /// (asyncio's 64 KiB, which joinmarket-ng sets, `server.py` ~202).
    pub unread_limit: u64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_ms(200),
            rto_max: Duration::from_secs(120),
            retries2: 15,
            syn_retries: 6,
            unread_limit: 131_072 + 16_384 + 65_536,
        }
    }
}

impl TcpConfig {
    /// `tcp_model_timeout`: how long `boundary` retransmissions take when
    /// the RTO starts at `base` and doubles up to `rto_max`.
    pub fn model_timeout(&self, boundary: u32, base: Duration) -> Duration {
        let base_us = base.as_us().max(1);
        let max_us = self.rto_max.as_us();
        let thresh = (max_us / base_us).checked_ilog2().unwrap_or(0);
        let us = if boundary <= thresh {
            ((2u64 << boundary) - 1) * base_us
        } else {
            ((2u64 << thresh) - 1) * base_us + u64::from(boundary - thresh) * max_us
        };
        Duration::from_us(us)
    }
    /// An established connection's give-up time (924.6 s by default).
    pub fn data_timeout(&self) -> Duration {
        self.model_timeout(self.retries2, self.rto_min)
    }
    /// A connect's give-up time (127 s by default).
    pub fn syn_timeout(&self) -> Duration {
        self.model_timeout(self.syn_retries, self.rto_initial)
    }
}

/// What a packet carries beyond its header. Serializable for hosts that
/// put packets on a real (or madsim's) network: the async driver.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Kind<M> {
    Syn,
    SynAck,
    Ack,
    Data(u64, M),
    Fin(u64),
    Rst,
}

/// One packet on the wire. `ts`/`echo` are TCP timestamps (TSval/TSecr);
/// `ack` is the cumulative acknowledgement: the next sequence expected.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Packet<M> {
    pub conn: ConnId,
    pub kind: Kind<M>,
    pub ts: Timestamp,
    pub echo: Option<Timestamp>,
    pub ack: Option<u64>,
}

impl<M> Packet<M> {
    pub fn label(&self) -> &'static str {
        match self.kind {
            Kind::Syn => "SYN",
            Kind::SynAck => "SYN-ACK",
            Kind::Ack => "ACK",
            Kind::Data(..) => "data",
            Kind::Fin(_) => "FIN",
            Kind::Rst => "RST",
        }
    }
    pub fn msg(&self) -> Option<&M> {
        match &self.kind {
            Kind::Data(_, m) => Some(m),
            _ => None,
        }
    }
}

/// What the stream layer asks the engine to do.
#[derive(Debug)]
pub(crate) enum Effect<M> {
    /// Put a packet on the wire.
    Transmit {
        from: NodeId,
        to: NodeId,
        packet: Packet<M>,
        /// `Some(n)`: the n-th retransmission (for the trace).
        retransmission: Option<u32>,
    },
    /// Hand an input to the process `incarnation` of `node`.
    Input {
        node: NodeId,
        incarnation: u32,
        peer: NodeId,
        input: Input<M>,
    },
    /// Set (`Some`) or cancel (`None`) the endpoint's retransmission
    /// timer; a new one replaces the old.
    Timer {
        conn: ConnId,
        node: NodeId,
        at: Option<Timestamp>,
    },
    /// A net-level trace record: `kind` at `node` about `peer`.
    Note {
        node: NodeId,
        peer: NodeId,
        kind: &'static str,
        reason: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    SynSent,
    SynReceived,
    Established,
}

#[derive(Debug)]
struct Segment<M> {
    seq: u64,
    /// `None`: the FIN.
    msg: Option<M>,
    /// When it was last transmitted; `None` while still unsent.
    sent_at: Option<Timestamp>,
}

/// Linux's RTT estimator (`tcp_rtt_estimator`, all in microseconds, with
/// `srtt` scaled by 8 and `mdev` by 4 as upstream keeps them).
#[derive(Clone, Copy, Debug)]
struct Rtt {
    srtt8: i64,
    mdev: i64,
    mdev_max: i64,
    rttvar: i64,
    rtt_seq: u64,
}

impl Rtt {
    fn sample(&mut self, m_us: i64, rto_min_us: i64, snd_una: u64, snd_nxt: u64) {
        let mut m = m_us.max(1);
        if self.srtt8 != 0 {
            m -= self.srtt8 >> 3;
            self.srtt8 += m;
            if m < 0 {
                m = -m;
                m -= self.mdev >> 2;
                if m > 0 {
                    m >>= 3;
                }
            } else {
                m -= self.mdev >> 2;
            }
            self.mdev += m;
            if self.mdev > self.mdev_max {
                self.mdev_max = self.mdev;
                if self.mdev_max > self.rttvar {
                    self.rttvar = self.mdev_max;
                }
            }
            if snd_una > self.rtt_seq {
                if self.mdev_max < self.rttvar {
                    self.rttvar -= (self.rttvar - self.mdev_max) >> 2;
                }
                self.rtt_seq = snd_nxt;
                self.mdev_max = rto_min_us;
            }
        } else {
            self.srtt8 = m << 3;
            self.mdev = m << 1;
            self.rttvar = self.mdev.max(rto_min_us);
            self.mdev_max = self.rttvar;
            self.rtt_seq = snd_nxt;
        }
        self.srtt8 = self.srtt8.max(1);
    }
    /// `__tcp_set_rto`.
    fn rto_us(&self) -> i64 {
        (self.srtt8 >> 3) + self.rttvar
    }
}

#[derive(Debug)]
struct Endpoint<M> {
    peer: NodeId,
    /// The process that may use it; `None` once it closed it (or died): the
    /// kernel still delivers what was written, then the FIN.
    owner: Option<u32>,
    state: State,
    // Send half.
    snd_una: u64,
    snd_nxt: u64,
    /// Written and not yet acknowledged, oldest first (unsent ones last).
    segments: VecDeque<Segment<M>>,
    rtt: Option<Rtt>,
    rto: Duration,
    /// Consecutive expiries since the last advancing ACK.
    retransmits: u32,
    /// When the oldest segment being retransmitted was first sent
    /// (`tp->retrans_stamp`); for a SYN, when the first SYN went out.
    retrans_stamp: Option<Timestamp>,
    timer: Option<Timestamp>,
    /// Segments the last expiry found outstanding: resent as ACKs advance.
    lost_until: u64,
    // Receive half.
    rcv_nxt: u64,
    out_of_order: BTreeMap<u64, Option<M>>,
    ts_recent: Option<Timestamp>,
    /// The peer's FIN was delivered.
    fin_received: bool,
    /// An ACK is owed for a segment that arrived now, echoing this TSval:
    /// it rides on the first segment this end sends at the same instant,
    /// or leaves alone when the instant's work is done (`flush_acks`).
    ack_due: Option<Timestamp>,
}

impl<M> Endpoint<M> {
    fn new(peer: NodeId, owner: u32, state: State, rto: Duration) -> Self {
        Endpoint {
            peer,
            owner: Some(owner),
            state,
            snd_una: 1,
            snd_nxt: 1,
            segments: VecDeque::new(),
            rtt: None,
            rto,
            retransmits: 0,
            retrans_stamp: None,
            timer: None,
            lost_until: 0,
            rcv_nxt: 1,
            out_of_order: BTreeMap::new(),
            ts_recent: None,
            fin_received: false,
            ack_due: None,
        }
    }
}

/// Both ends of every connection, indexed by connection id (ids are handed
/// out densely, from 1): a lookup is an index, not a tree walk, which is
/// most of what a packet costs.
struct Table<M> {
    conns: Vec<Ends<M>>,
}

struct Ends<M> {
    /// The node of each end: the connecting one first.
    nodes: [NodeId; 2],
    ends: [Option<Box<Endpoint<M>>>; 2],
}

impl<M> Default for Table<M> {
    fn default() -> Self {
        Table { conns: Vec::new() }
    }
}

impl<M> fmt::Debug for Table<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({} endpoints)", self.iter().count())
    }
}

impl<M> Table<M> {
    fn slot(&self, &(conn, node): &(ConnId, NodeId)) -> Option<(usize, usize)> {
        let i = usize::try_from(conn.0).ok()?;
        let ends = self.conns.get(i)?;
        let side = ends.nodes.iter().position(|n| *n == node)?;
        Some((i, side))
    }
    fn get(&self, key: &(ConnId, NodeId)) -> Option<&Endpoint<M>> {
        let (i, side) = self.slot(key)?;
        self.conns[i].ends[side].as_deref()
    }
    fn get_mut(&mut self, key: &(ConnId, NodeId)) -> Option<&mut Endpoint<M>> {
        let (i, side) = self.slot(key)?;
        self.conns[i].ends[side].as_deref_mut()
    }
    fn remove(&mut self, key: &(ConnId, NodeId)) -> Option<Endpoint<M>> {
        let (i, side) = self.slot(key)?;
        self.conns[i].ends[side].take().map(|b| *b)
    }
    /// Insert `node`'s end of `conn`, whose other end is on `ep.peer`.
    fn insert(&mut self, (conn, node): (ConnId, NodeId), ep: Endpoint<M>) {
        let i = usize::try_from(conn.0).expect("connection ids fit in memory");
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || Ends {
                nodes: [node, ep.peer],
                ends: [None, None],
            });
        }
        let slot = &mut self.conns[i];
        if slot.ends.iter().all(Option::is_none) {
            slot.nodes = [node, ep.peer];
        }
        if let Some(side) = slot.nodes.iter().position(|n| *n == node) {
            slot.ends[side] = Some(Box::new(ep));
        }
    }
    /// Every endpoint, by connection id, connecting end first.
    fn iter(&self) -> impl Iterator<Item = ((ConnId, NodeId), &Endpoint<M>)> {
        self.conns.iter().enumerate().flat_map(|(i, ends)| {
            ends.nodes
                .iter()
                .zip(&ends.ends)
                .filter_map(move |(n, ep)| Some(((ConnId(i as u64), *n), ep.as_deref()?)))
        })
    }
    /// Drop every endpoint whose key fails `keep`.
    fn retain(&mut self, keep: impl Fn((ConnId, NodeId)) -> bool) {
        for (i, ends) in self.conns.iter_mut().enumerate() {
            for (n, ep) in ends.nodes.iter().zip(&mut ends.ends) {
                if ep.is_some() && !keep((ConnId(i as u64), *n)) {
                    *ep = None;
                }
            }
        }
    }
}

impl<M> std::ops::Index<&(ConnId, NodeId)> for Table<M> {
    type Output = Endpoint<M>;
    fn index(&self, key: &(ConnId, NodeId)) -> &Endpoint<M> {
        self.get(key).expect("an endpoint the caller holds")
    }
}

/// Why a write could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteRefused {
    /// No such connection here, or its owner closed it.
    Gone,
}

/// Every endpoint of the run, keyed by `(connection, node)`.
#[derive(Debug)]
pub(crate) struct Streams<M> {
    pub config: TcpConfig,
    endpoints: Table<M>,
    /// Endpoints that owe an ACK (see `Endpoint::ack_due`).
    acks_due: Vec<(ConnId, NodeId)>,
    effects: Vec<Effect<M>>,
}

impl<M: Clone> Streams<M> {
    pub fn new(config: TcpConfig) -> Self {
        Streams {
            config,
            endpoints: Table::default(),
            acks_due: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// What the last operations asked for, in order: the caller drains it
    /// and hands the (empty) buffer back with `return_effects`, so that no
    /// packet allocates.
    pub fn take_effects(&mut self) -> Vec<Effect<M>> {
        std::mem::take(&mut self.effects)
    }
    pub fn return_effects(&mut self, mut buffer: Vec<Effect<M>>) {
        buffer.clear();
        if self.effects.is_empty() {
            self.effects = buffer;
        }
    }

    /// Send the ACKs still owed once everything due at this instant has
    /// run (no same-instant answer carried them).
    pub fn flush_acks(&mut self, now: Timestamp) {
        let mut due = std::mem::take(&mut self.acks_due);
        for &(conn, node) in &due {
            let echo = self
                .endpoints
                .get_mut(&(conn, node))
                .and_then(|ep| ep.ack_due.take());
            if let Some(echo) = echo {
                self.transmit(now, conn, node, Kind::Ack, Some(echo));
            }
        }
        due.clear();
        if self.acks_due.is_empty() {
            self.acks_due = due;
        }
    }

    /// Owe an ACK for a segment stamped `ts` (see `Endpoint::ack_due`).
    fn owe_ack(&mut self, conn: ConnId, node: NodeId, ts: Timestamp) {
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        if ep.ack_due.replace(ts).is_none() {
            self.acks_due.push((conn, node));
        }
    }

    /// The peer of `node`'s end of `conn`, if it still exists.
    pub fn peer(&self, conn: ConnId, node: NodeId) -> Option<NodeId> {
        self.endpoints.get(&(conn, node)).map(|e| e.peer)
    }

    pub fn connect(&mut self, now: Timestamp, conn: ConnId, from: NodeId, owner: u32, to: NodeId) {
        let mut ep = Endpoint::new(to, owner, State::SynSent, self.config.rto_initial);
        ep.retrans_stamp = Some(now);
        self.endpoints.insert((conn, from), ep);
        self.transmit(now, conn, from, Kind::Syn, None);
        self.arm(now, conn, from);
    }

    /// The owner writes `msg`: sent now if the connection is established,
    /// queued until it is otherwise.
    pub fn write(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        node: NodeId,
        owner: u32,
        msg: M,
    ) -> Result<NodeId, WriteRefused> {
        let ep = self.owned(conn, node, owner).ok_or(WriteRefused::Gone)?;
        let peer = ep.peer;
        self.queue(now, conn, node, Some(msg));
        Ok(peer)
    }

    /// The owner closes its end: a FIN after what it wrote. Closing a
    /// connect still in progress abandons it.
    pub fn close(&mut self, now: Timestamp, conn: ConnId, node: NodeId, owner: u32) {
        let Some(ep) = self.owned(conn, node, owner) else {
            return;
        };
        ep.owner = None;
        if ep.state == State::SynSent {
            self.endpoints.remove(&(conn, node));
            return;
        }
        self.queue(now, conn, node, None);
    }

    /// The owner aborts its end (`SO_LINGER` 0): a RST, and it is gone.
    pub fn reset(&mut self, now: Timestamp, conn: ConnId, node: NodeId, owner: u32) {
        if self.owned(conn, node, owner).is_some() {
            let ep = self.endpoints.remove(&(conn, node)).expect("checked");
            self.send_rst(now, conn, node, ep.peer);
        }
    }

    /// A write failed locally (the `break` fault): the endpoint is gone
    /// without a word to the peer.
    pub fn drop_endpoint(&mut self, conn: ConnId, node: NodeId) {
        self.endpoints.remove(&(conn, node));
    }

    /// The process `owner` of `node` ended while its host stays up
    /// (`kill`, `stop`): the kernel closes its sockets, each with a FIN
    /// after what was written.
    pub fn process_gone(&mut self, now: Timestamp, node: NodeId, owner: u32) {
        let mine: Vec<ConnId> = self
            .endpoints
            .iter()
            .filter(|((_, n), ep)| *n == node && ep.owner == Some(owner))
            .map(|((c, _), _)| c)
            .collect();
        for conn in mine {
            let ep = &self.endpoints[&(conn, node)];
            if ep.state == State::SynReceived {
                // Not yet accepted: the listener's backlog is reset
                // (`inet_csk_listen_stop`).
                let ep = self.endpoints.remove(&(conn, node)).expect("listed");
                self.send_rst(now, conn, node, ep.peer);
            } else {
                self.close(now, conn, node, owner);
            }
        }
    }

    /// The host of `node` went down: every endpoint on it vanishes, silently.
    pub fn host_down(&mut self, node: NodeId) {
        self.endpoints.retain(|(_, n)| n != node);
    }

    /// A packet from `from` reaches the (up) host of `node`. `listener`:
    /// the incarnation of the process listening there, if any.
    pub fn on_packet(
        &mut self,
        now: Timestamp,
        node: NodeId,
        from: NodeId,
        listener: Option<u32>,
        packet: Packet<M>,
    ) {
        let conn = packet.conn;
        let Some(ep) = self.endpoints.get_mut(&(conn, node)) else {
            return self.no_endpoint(now, node, from, listener, packet);
        };
        if ep.peer != from {
            return; // cannot happen: ids are unique in the run
        }
        match packet.kind {
            Kind::Rst => {
                let ep = self.endpoints.remove(&(conn, node)).expect("found above");
                let error = if ep.state == State::SynSent {
                    ConnError::Refused
                } else {
                    ConnError::Reset
                };
                self.note(node, from, kind::RESET, "RST received");
                self.fail(conn, node, ep, error);
            }
            Kind::Syn => {
                // The client's SYN again: our SYN-ACK was lost.
                if ep.state == State::SynReceived {
                    self.transmit(now, conn, node, Kind::SynAck, Some(packet.ts));
                }
            }
            Kind::SynAck => {
                if ep.state == State::SynSent {
                    ep.state = State::Established;
                    ep.retrans_stamp = None;
                    ep.retransmits = 0;
                    ep.timer = None;
                    // `tcp_rcv_synsent_state_process` stores the SYN-ACK's
                    // TSval (`tcp_store_ts_recent`): every segment from now
                    // on echoes it, so whichever of them completes the
                    // server's handshake gives the server its first RTT
                    // sample (audit A3: the first data segment echoed
                    // nothing, and the server's RTO stayed at 1 s).
                    ep.ts_recent = Some(packet.ts);
                    self.sample_rtt(now, conn, node, packet.echo);
                    // The SYN's timer goes before the process hears of the
                    // connection: a segment it writes on `Connected` arms
                    // its own retransmission timer (`tcp_event_new_data_sent`
                    // -> `tcp_rearm_rto`), which must survive. (Cancelling
                    // after the input lost that timer: a lost first write
                    // was never resent; the oracle's finding T1.)
                    self.effects.push(Effect::Timer {
                        conn,
                        node,
                        at: None,
                    });
                    // The kernel ACKs the SYN-ACK at once (`tcp_send_ack` in
                    // softirq context); the process, only woken by
                    // `tcp_finish_connect`, writes after it.
                    self.transmit(now, conn, node, Kind::Ack, Some(packet.ts));
                    let owner = self.endpoints[&(conn, node)].owner;
                    if let Some(incarnation) = owner {
                        self.effects.push(Effect::Input {
                            node,
                            incarnation,
                            peer: from,
                            input: Input::Connected { conn, peer: from },
                        });
                    }
                    self.flush(now, conn, node);
                } else {
                    // A duplicate (our ACK was lost): an established socket
                    // answers a SYN with a challenge ACK (RFC 5961 4.2,
                    // `tcp_validate_incoming`) and discards the segment
                    // before `tcp_replace_ts_recent`, so the ACK echoes
                    // the first SYN-ACK's TSval, not this one's.
                    let echo = ep.ts_recent;
                    self.transmit(now, conn, node, Kind::Ack, echo);
                }
            }
            Kind::Ack | Kind::Data(..) | Kind::Fin(_) => {
                if ep.state == State::SynSent {
                    return; // cannot happen before the SYN-ACK
                }
                if ep.state == State::SynReceived {
                    if packet.ack.is_none() {
                        return;
                    }
                    ep.state = State::Established;
                    self.sample_rtt(now, conn, node, packet.echo);
                    let ep = &self.endpoints[&(conn, node)];
                    if let Some(incarnation) = ep.owner {
                        self.effects.push(Effect::Input {
                            node,
                            incarnation,
                            peer: from,
                            input: Input::Accepted { conn, peer: from },
                        });
                    }
                    self.flush(now, conn, node);
                }
                if let Some(ack) = packet.ack {
                    self.on_ack(now, conn, node, ack, packet.echo);
                    if self.endpoints.get(&(conn, node)).is_none() {
                        // That ACK finished a connection both ends had
                        // closed: what the packet carries is a copy of
                        // something already received (the peer's FIN came
                        // before), sent again before our ACK reached it.
                        return;
                    }
                }
                match packet.kind {
                    Kind::Data(seq, msg) => {
                        self.on_segment(now, conn, node, seq, Some(msg), packet.ts)
                    }
                    Kind::Fin(seq) => self.on_segment(now, conn, node, seq, None, packet.ts),
                    _ => {}
                }
            }
        }
    }

    /// A packet for a connection this host does not hold.
    fn no_endpoint(
        &mut self,
        now: Timestamp,
        node: NodeId,
        from: NodeId,
        listener: Option<u32>,
        packet: Packet<M>,
    ) {
        let conn = packet.conn;
        match (&packet.kind, listener) {
            (Kind::Syn, Some(owner)) => {
                let ep = Endpoint::new(from, owner, State::SynReceived, self.config.rto_initial);
                self.endpoints.insert((conn, node), ep);
                self.transmit(now, conn, node, Kind::SynAck, Some(packet.ts));
            }
            (Kind::Syn, None) => {
                self.note(node, from, kind::REFUSED, "nobody listening");
                self.send_rst(now, conn, node, from);
            }
            (Kind::Rst, _) => {}
            _ => {
                self.note(node, from, kind::STALE, "no such connection here");
                self.send_rst(now, conn, node, from);
            }
        }
    }

    fn on_ack(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        node: NodeId,
        ack: u64,
        echo: Option<Timestamp>,
    ) {
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        if ack <= ep.snd_una || ack > ep.snd_nxt {
            return;
        }
        ep.snd_una = ack;
        while ep.segments.front().is_some_and(|s| s.seq < ack) {
            ep.segments.pop_front();
        }
        ep.retransmits = 0;
        ep.retrans_stamp = None;
        self.sample_rtt(now, conn, node, echo);
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        // Segments the last expiry found outstanding go out again now
        // (loss recovery), without waiting for their own expiry.
        let resend: Vec<u64> = ep
            .segments
            .iter()
            .filter(|s| s.sent_at.is_some() && s.seq < ep.lost_until)
            .map(|s| s.seq)
            .collect();
        for seq in resend {
            self.send_segment(now, conn, node, seq, Some(1));
        }
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        ep.lost_until = 0;
        let outstanding = ep.segments.iter().any(|s| s.sent_at.is_some());
        ep.timer = None;
        if outstanding {
            self.arm(now, conn, node);
        } else {
            self.effects.push(Effect::Timer {
                conn,
                node,
                at: None,
            });
            self.remove_if_done(now, conn, node);
        }
    }

    /// Closed by its process, everything it wrote (and its FIN)
    /// acknowledged, and the peer's FIN in: the connection is over (what
    /// would follow is TIME_WAIT, not modelled).
    fn remove_if_done(&mut self, now: Timestamp, conn: ConnId, node: NodeId) {
        let ep = &self.endpoints[&(conn, node)];
        if ep.owner.is_none() && ep.segments.is_empty() && ep.fin_received {
            if let Some(echo) = ep.ack_due {
                self.transmit(now, conn, node, Kind::Ack, Some(echo));
            }
            self.endpoints.remove(&(conn, node));
        }
    }

    fn on_segment(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        node: NodeId,
        seq: u64,
        msg: Option<M>,
        ts: Timestamp,
    ) {
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        let peer = ep.peer;
        if ep.owner.is_none() && msg.is_some() && seq >= ep.rcv_nxt {
            // New data for an endpoint its process closed: RST.
            self.endpoints.remove(&(conn, node));
            self.note(node, peer, kind::RESET, "data after close");
            self.send_rst(now, conn, node, peer);
            return;
        }
        if seq >= ep.rcv_nxt {
            ep.out_of_order.entry(seq).or_insert(msg);
        }
        if seq == ep.rcv_nxt {
            ep.ts_recent = Some(ts);
        }
        let mut delivered = Vec::new();
        while let Some(m) = ep.out_of_order.remove(&ep.rcv_nxt) {
            ep.rcv_nxt += 1;
            delivered.push(m);
        }
        let owner = ep.owner;
        let mut fin = false;
        for m in delivered {
            match m {
                Some(msg) => {
                    if let Some(incarnation) = owner {
                        self.effects.push(Effect::Input {
                            node,
                            incarnation,
                            peer,
                            input: Input::Data { conn, peer, msg },
                        });
                    }
                }
                None => {
                    fin = true;
                    if let Some(incarnation) = owner {
                        self.effects.push(Effect::Input {
                            node,
                            incarnation,
                            peer,
                            input: Input::Closed { conn, peer },
                        });
                    }
                }
            }
        }
        self.owe_ack(conn, node, ts);
        if fin {
            self.endpoints
                .get_mut(&(conn, node))
                .expect("held")
                .fin_received = true;
            self.remove_if_done(now, conn, node);
        }
    }

    /// The retransmission timer of `node`'s end of `conn` fired.
    pub fn on_timer(&mut self, now: Timestamp, conn: ConnId, node: NodeId) {
        let config = self.config;
        let Some(ep) = self.endpoints.get_mut(&(conn, node)) else {
            return;
        };
        if ep.timer.is_none_or(|t| t > now) {
            return;
        }
        ep.timer = None;
        let peer = ep.peer;
        if ep.state == State::SynSent {
            let first = ep.retrans_stamp.unwrap_or(now);
            if ep.retransmits > 0 && now.saturating_since(first) >= config.syn_timeout() {
                let ep = self.endpoints.remove(&(conn, node)).expect("found above");
                self.note(node, peer, kind::TIMED_OUT, "SYN retries exhausted");
                return self.fail(conn, node, ep, ConnError::TimedOut);
            }
            ep.retransmits += 1;
            ep.rto = (ep.rto + ep.rto).min(config.rto_max);
            let n = ep.retransmits;
            self.transmit_retry(now, conn, node, Kind::Syn, n);
            return self.arm(now, conn, node);
        }
        let Some(head) = ep.segments.front().filter(|s| s.sent_at.is_some()) else {
            return;
        };
        let head_seq = head.seq;
        let head_sent = head.sent_at.expect("filtered");
        if ep.retransmits > 0 {
            let first = ep.retrans_stamp.unwrap_or(head_sent);
            if now.saturating_since(first) >= config.data_timeout() {
                let ep = self.endpoints.remove(&(conn, node)).expect("found above");
                self.note(node, peer, kind::TIMED_OUT, "retransmissions exhausted");
                return self.fail(conn, node, ep, ConnError::TimedOut);
            }
        } else {
            ep.retrans_stamp = Some(head_sent);
        }
        ep.retransmits += 1;
        ep.lost_until = ep.snd_nxt;
        let n = ep.retransmits;
        self.send_segment(now, conn, node, head_seq, Some(n));
        let ep = self.endpoints.get_mut(&(conn, node)).expect("found above");
        ep.rto = (ep.rto + ep.rto).min(config.rto_max);
        self.arm(now, conn, node);
    }

    fn owned(&mut self, conn: ConnId, node: NodeId, owner: u32) -> Option<&mut Endpoint<M>> {
        self.endpoints
            .get_mut(&(conn, node))
            .filter(|ep| ep.owner == Some(owner))
    }

    /// Append a segment (data, or the FIN) and send it if established.
    fn queue(&mut self, now: Timestamp, conn: ConnId, node: NodeId, msg: Option<M>) {
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller checked");
        let seq = ep.snd_nxt;
        ep.snd_nxt += 1;
        ep.segments.push_back(Segment {
            seq,
            msg,
            sent_at: None,
        });
        if ep.state == State::Established {
            self.flush(now, conn, node);
        }
    }

    /// Send every segment not yet sent; start the timer if none runs.
    fn flush(&mut self, now: Timestamp, conn: ConnId, node: NodeId) {
        let ep = &self.endpoints[&(conn, node)];
        let unsent: Vec<u64> = ep
            .segments
            .iter()
            .filter(|s| s.sent_at.is_none())
            .map(|s| s.seq)
            .collect();
        if unsent.is_empty() {
            return;
        }
        for seq in unsent {
            self.send_segment(now, conn, node, seq, None);
        }
        if self.endpoints[&(conn, node)].timer.is_none() {
            self.arm(now, conn, node);
        }
    }

    fn send_segment(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        node: NodeId,
        seq: u64,
        retry: Option<u32>,
    ) {
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        let Some(seg) = ep.segments.iter_mut().find(|s| s.seq == seq) else {
            return;
        };
        seg.sent_at = Some(now);
        let kind = match &seg.msg {
            Some(m) => Kind::Data(seq, m.clone()),
            None => Kind::Fin(seq),
        };
        // Carries the ACK this end owes, if any.
        let echo = ep.ack_due.take().or(ep.ts_recent);
        let packet = Packet {
            conn,
            kind,
            ts: now,
            echo,
            ack: Some(ep.rcv_nxt),
        };
        let to = ep.peer;
        self.effects.push(Effect::Transmit {
            from: node,
            to,
            packet,
            retransmission: retry,
        });
    }

    fn transmit(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        node: NodeId,
        kind: Kind<M>,
        echo: Option<Timestamp>,
    ) {
        let ep = &self.endpoints[&(conn, node)];
        let ack = (!matches!(kind, Kind::Syn)).then_some(ep.rcv_nxt);
        let packet = Packet {
            conn,
            kind,
            ts: now,
            echo,
            ack,
        };
        let to = ep.peer;
        self.effects.push(Effect::Transmit {
            from: node,
            to,
            packet,
            retransmission: None,
        });
    }

    fn transmit_retry(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        node: NodeId,
        kind: Kind<M>,
        n: u32,
    ) {
        self.transmit(now, conn, node, kind, None);
        if let Some(Effect::Transmit { retransmission, .. }) = self.effects.last_mut() {
            *retransmission = Some(n);
        }
    }

    fn send_rst(&mut self, now: Timestamp, conn: ConnId, from: NodeId, to: NodeId) {
        self.effects.push(Effect::Transmit {
            from,
            to,
            packet: Packet {
                conn,
                kind: Kind::Rst,
                ts: now,
                echo: None,
                ack: None,
            },
            retransmission: None,
        });
    }

    fn sample_rtt(&mut self, now: Timestamp, conn: ConnId, node: NodeId, echo: Option<Timestamp>) {
        let Some(echo) = echo else { return };
        let rto_min_us = i64::try_from(self.config.rto_min.as_us()).unwrap_or(i64::MAX);
        let rto_max = self.config.rto_max;
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        let m = i64::try_from(now.saturating_since(echo).as_us()).unwrap_or(i64::MAX);
        let (una, nxt) = (ep.snd_una, ep.snd_nxt);
        let rtt = ep.rtt.get_or_insert(Rtt {
            srtt8: 0,
            mdev: 0,
            mdev_max: 0,
            rttvar: 0,
            rtt_seq: 0,
        });
        rtt.sample(m, rto_min_us, una, nxt);
        let rto_us = u64::try_from(rtt.rto_us()).unwrap_or(0);
        ep.rto = Duration::from_us(rto_us).min(rto_max);
    }

    fn arm(&mut self, now: Timestamp, conn: ConnId, node: NodeId) {
        let ep = self
            .endpoints
            .get_mut(&(conn, node))
            .expect("caller holds it");
        let at = now + ep.rto;
        ep.timer = Some(at);
        self.effects.push(Effect::Timer {
            conn,
            node,
            at: Some(at),
        });
    }

    fn fail(&mut self, conn: ConnId, node: NodeId, ep: Endpoint<M>, error: ConnError) {
        let Some(incarnation) = ep.owner else { return };
        if ep.state == State::SynReceived {
            return; // never accepted: its process does not know it
        }
        let peer = ep.peer;
        let input = if ep.state == State::SynSent {
            Input::ConnectFailed { conn, peer, error }
        } else {
            Input::Reset { conn, peer, error }
        };
        self.effects.push(Effect::Input {
            node,
            incarnation,
            peer,
            input,
        });
    }

    fn note(&mut self, node: NodeId, peer: NodeId, kind: &'static str, reason: &'static str) {
        self.effects.push(Effect::Note {
            node,
            peer,
            kind,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_give_up_times() {
        let c = TcpConfig::default();
        assert_eq!(c.data_timeout(), Duration::from_ms(924_600));
        assert_eq!(c.syn_timeout(), Duration::from_secs(127));
        // retries2 = 8 stays in the doubling range: (2^9 - 1) * 0.2 s.
        let eight = TcpConfig { retries2: 8, ..c };
        assert_eq!(eight.data_timeout(), Duration::from_ms(102_200));
    }

    #[test]
    fn first_rtt_sample_gives_rto_of_r_plus_max_2r_or_200ms() {
        let mut rtt = Rtt {
            srtt8: 0,
            mdev: 0,
            mdev_max: 0,
            rttvar: 0,
            rtt_seq: 0,
        };
        rtt.sample(100_000, 200_000, 1, 1);
        assert_eq!(rtt.rto_us(), 300_000);
        let mut slow = rtt;
        slow.srtt8 = 0;
        slow.sample(400_000, 200_000, 1, 1);
        assert_eq!(slow.rto_us(), 1_200_000);
        // Steady samples of the same RTT: the variance decays to its floor.
        for i in 0..50 {
            rtt.sample(100_000, 200_000, 2 + i, 3 + i);
        }
        assert_eq!(rtt.rto_us(), 300_000);
    }
}

//! The async driver: how a pure [`Machine`] runs on a transport, the loop a
//! user deploys. It is written against madsim's API (`madsim::net::Endpoint`,
//! `madsim::time`), which is tokio and real sockets in a normal build and
//! madsim's simulated network and clock under `--cfg madsim`; the
//! [`madsim engine`](crate::madsim_engine) runs it that way.
//!
//! The driver is a node's host: its kernel and, while one runs, its
//! process (the machine). The kernel carries connections with the main
//! engine's stream stack ([`Streams`]: Linux TCP's handshake, RTO, give-up
//! times, FIN and RST), whose packets travel as datagrams on the node's
//! endpoint under their own tag. So connections see madsim's loss, latency
//! and partitions as datagrams do, and TCP's rules repair or report them.
//!
//! # Drive loop
//!
//! ```text
//! inputs = [Start]
//! loop {
//!     unless the process is paused, for each pending input:
//!         machine.handle(clock.now(global time), input, outbox)
//!         carry out the outbox in order:
//!             record      -> the sink, stamped with the global time
//!             send        -> endpoint.send_to(addr of `to`, TAG, encoded frame)
//!             awaited/try -> as send; Input::SendDone is the next input
//!             listen/connect/close/reset, write(conn)
//!                         -> the kernel's Streams (a write on a broken link:
//!                            SendDone ConnectionReset, then Reset)
//!         what the stream asks for: packets to send, inputs (next in
//!         line), retransmission timers into the kernel's table
//!     after a Stop (or a Kill): the process is gone, its connections
//!         close (Streams::process_gone); the kernel keeps running
//!     send the ACKs still owed, then every packet (STREAM_TAG)
//!     wait for the first of (in this priority when several are ready):
//!         a control message  -> Stop, Kill, Start (a fresh machine), Pause,
//!                               Resume, or re-read the deadline (clock changed)
//!         a packet           -> Streams::on_packet (answered even with no process)
//!         a datagram         -> Input::Recv { from, msg }
//!         a stream timer     -> Streams::on_timer (global time, as on the
//!                               main engine: TCP's timers ignore clock drift)
//!         poll_timeout()     -> Input::Timeout, slept until on the node's clock
//! }
//! ```
//!
//! Everything the machine does not own stays out here: the sockets, the
//! clock, the encoding (JSON via serde, one datagram per message or
//! packet) and the kernel. Why connections are carried this way, and how
//! the engines compare, is in `docs/engines.md`, "Connections".

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{select_biased, FutureExt, Stream, StreamExt};
use madsim::net::Endpoint;
use madsim::time::{sleep_until, Instant};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::Clock;
use crate::engine::{LimitError, Output, Stats};
use crate::stream::{Effect, Packet, Streams, TcpConfig};
use crate::time::Timestamp;
use crate::trace::{Level, Record, Trace};
use crate::{ConnError, ConnId, Dest, Input, Machine, NodeId, Outbox, SendError};

/// The endpoint tag every heartsim message carries.
pub const TAG: u64 = 0x6865_6172_7473_696d; // "heartsim"

/// The endpoint tag of stream packets (SYN, data, ACK, FIN, RST).
pub const STREAM_TAG: u64 = TAG + 1;

/// Larger datagrams are cut by the endpoint; no frame comes near it.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// What whoever runs the node tells its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Graceful shutdown of the process: the machine gets `Input::Stop`,
    /// then its connections close; the host stays up.
    Stop,
    /// The process dies (the host stays up): its connections close.
    Kill,
    /// A fresh process (the next machine from the driver's factory).
    Start,
    /// SIGSTOP: the machine gets nothing (inputs wait, its timer does not
    /// fire); the kernel keeps acknowledging and accepting.
    Pause,
    /// SIGCONT: what waited is handed over, then the timer if it came due.
    Resume,
    /// The node's clock was jumped or its drift changed: the pending
    /// deadline falls at another global time.
    ClockChanged,
}

/// Every node's address, both ways.
#[derive(Debug)]
pub struct AddressBook {
    addrs: Vec<SocketAddr>,
    ids: BTreeMap<SocketAddr, NodeId>,
}

impl AddressBook {
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        let ids = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, NodeId(i)))
            .collect();
        AddressBook { addrs, ids }
    }
    pub fn addr(&self, node: NodeId) -> SocketAddr {
        self.addrs[node.0]
    }
    pub fn node(&self, addr: SocketAddr) -> Option<NodeId> {
        self.ids.get(&addr).copied()
    }
    /// How many nodes the run has.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

/// What every driver of one run reports to and reads from.
#[derive(Debug)]
pub struct Shared {
    pub trace: Mutex<Trace>,
    /// Links whose connection is reset (the `break` fault): a send on one
    /// fails with [`SendError::ConnectionReset`], as on a real socket.
    pub broken: Mutex<BTreeSet<(NodeId, NodeId)>>,
    pub stats: Mutex<Stats>,
    pub max_events: u64,
    /// The first limit hit; every driver stops once it is set.
    pub limit_hit: Mutex<Option<LimitError>>,
    /// Set when a machine used what this driver cannot carry: the run
    /// then fails as unsupported rather than pass with a wrong trace.
    /// Every driver stops once it is set.
    pub unsupported: Mutex<Option<String>>,
    /// The next connection id: ids are unique in the run, as on the main
    /// engine, though each node's driver has an outbox of its own.
    pub next_conn: Mutex<u64>,
    /// The stream medium's TCP constants (Linux's defaults unless the
    /// run sets them).
    pub tcp: TcpConfig,
}

impl Shared {
    /// A run's shared state: nothing broken, no connection yet.
    pub fn new(trace: Trace, max_events: u64) -> Self {
        Shared {
            trace: Mutex::new(trace),
            broken: Mutex::new(BTreeSet::new()),
            stats: Mutex::new(Stats::default()),
            max_events,
            limit_hit: Mutex::new(None),
            unsupported: Mutex::new(None),
            next_conn: Mutex::new(1),
            tcp: TcpConfig::default(),
        }
    }
}

/// Lock a mutex nobody can have poisoned: drivers do not panic while
/// holding one, and a panic ends the whole simulation anyway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One node's surroundings.
pub struct NodeIo {
    pub node: NodeId,
    /// Datagrams (`TAG`) and stream packets (`STREAM_TAG`).
    pub endpoint: Arc<Endpoint>,
    pub book: Arc<AddressBook>,
    /// Outlives the node: a restart keeps the clock, as a machine's would.
    pub clock: Arc<Mutex<Clock>>,
    /// Global time zero.
    pub epoch: Instant,
    pub control: UnboundedReceiver<Control>,
    pub shared: Arc<Shared>,
}

#[cfg(madsim)]
fn instant_now() -> Instant {
    madsim::time::TimeHandle::current().now_instant()
}

#[cfg(not(madsim))]
#[allow(clippy::disallowed_methods)] // the one host-clock read, see below
fn instant_now() -> Instant {
    // tokio's clock: a deployed driver runs on real time. No simulation
    // uses this build of the driver (the main engine calls machines
    // directly), so it never reaches a simulated trace.
    Instant::now()
}

impl NodeIo {
    /// Global time: microseconds since the epoch.
    fn global_now(&self) -> Timestamp {
        let since = instant_now().saturating_duration_since(self.epoch);
        Timestamp::from_us(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }
    fn instant_at(&self, t: Timestamp) -> Instant {
        self.epoch + std::time::Duration::from_micros(t.as_us())
    }
}

/// The process: the running machine, if any.
struct Process<M> {
    machine: Option<M>,
    /// Bumped at every start: the owner of the connections it opens or
    /// accepts, as on the main engine.
    incarnation: u32,
    paused: bool,
}

/// The node's kernel: its end of every connection, their timers, the
/// packets to send.
struct Kernel<M> {
    node: NodeId,
    streams: Streams<M>,
    /// Each endpoint's retransmission timer (global time), and the same
    /// ordered by time.
    armed: BTreeMap<ConnId, Timestamp>,
    due: BTreeSet<(Timestamp, ConnId)>,
    outgoing: Vec<(NodeId, Packet<M>)>,
    /// The running process listens.
    listening: bool,
}

impl<M: Clone> Kernel<M> {
    fn new(node: NodeId, config: TcpConfig) -> Self {
        Kernel {
            node,
            streams: Streams::new(config),
            armed: BTreeMap::new(),
            due: BTreeSet::new(),
            outgoing: Vec::new(),
            listening: false,
        }
    }

    /// Do what the stream layer asked: packets to send (after the
    /// instant's work), inputs for the process that owns the endpoint,
    /// timers into the table, notes into a net-level trace.
    fn absorb(
        &mut self,
        process: &Process<impl Sized>,
        inputs: &mut VecDeque<Input<M>>,
        at: Timestamp,
        shared: &Shared,
    ) {
        let mut effects = self.streams.take_effects();
        for effect in effects.drain(..) {
            match effect {
                Effect::Transmit { to, packet, .. } => self.outgoing.push((to, packet)),
                Effect::Input {
                    incarnation, input, ..
                } => {
                    if process.machine.is_some() && incarnation == process.incarnation {
                        inputs.push_back(input);
                    }
                }
                Effect::Timer { conn, at, .. } => {
                    if let Some(old) = self.armed.remove(&conn) {
                        self.due.remove(&(old, conn));
                    }
                    if let Some(t) = at {
                        self.armed.insert(conn, t);
                        self.due.insert((t, conn));
                    }
                }
                Effect::Note {
                    node,
                    peer,
                    kind,
                    reason,
                } => {
                    let mut trace = lock(&shared.trace);
                    if trace.wants(Level::Net) {
                        trace.push(Record::net(
                            at,
                            node,
                            kind,
                            Some(peer),
                            Some(reason.into()),
                            None,
                        ));
                    }
                }
            }
        }
        self.streams.return_effects(effects);
    }

    /// The earliest retransmission timer.
    fn next_timer(&self) -> Option<Timestamp> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Fire every retransmission timer due by `now`.
    fn fire_timers(&mut self, now: Timestamp) {
        while let Some(&(t, conn)) = self.due.first().filter(|(t, _)| *t <= now) {
            self.due.remove(&(t, conn));
            self.armed.remove(&conn);
            self.streams.on_timer(now, conn, self.node);
        }
    }

    /// The process ends, the host stays up (kill, stop): its connections
    /// close, each with a FIN after what was written; those with data it
    /// never read (`unread`, queued while it was paused) are reset, as
    /// Linux does (`__tcp_close`: "Unread data was tossed").
    fn process_gone(
        &mut self,
        now: Timestamp,
        process: &mut Process<impl Sized>,
        unread: &BTreeSet<ConnId>,
    ) {
        if process.machine.take().is_some() {
            for &conn in unread {
                self.streams
                    .reset(now, conn, self.node, process.incarnation);
            }
            self.streams
                .process_gone(now, self.node, process.incarnation);
        }
        process.paused = false;
        self.listening = false;
    }
}

/// The connections of stream data among inputs the process never read.
fn unread_conns<M>(inputs: &VecDeque<Input<M>>) -> BTreeSet<ConnId> {
    inputs
        .iter()
        .filter_map(|i| match i {
            Input::Data { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect()
}

/// Run machines from `factory` on `io`: one at once, and a fresh one at
/// every [`Control::Start`]. Returns when the control channel closes (the
/// running machine gets `Input::Stop` first), the node is killed (the
/// future is dropped), or a run limit is hit.
pub async fn drive<M, F>(mut factory: F, mut io: NodeIo)
where
    M: Machine,
    M::Msg: Serialize + DeserializeOwned,
    F: FnMut() -> M,
{
    let mut kernel = Kernel::new(io.node, io.shared.tcp);
    let mut process = Process {
        machine: Some(factory()),
        incarnation: 1,
        paused: false,
    };
    let mut inputs = VecDeque::from([Input::Start]);
    // Kept across iterations, so that a packet being received is never
    // dropped by another branch of the select.
    let mut incoming = Box::pin(packets(io.endpoint.clone()).fuse());
    let mut buf = vec![0u8; MAX_FRAME_BYTES];
    let mut items = Vec::new();
    // The process ends once its inputs are handled (after `Stop`); the
    // driver returns after that when `closing`.
    let mut ending = false;
    let mut closing = false;
    // Connections with data a stopped process never read.
    let mut unread = BTreeSet::new();
    loop {
        while !process.paused {
            let Some(input) = inputs.pop_front() else {
                break;
            };
            let Some(machine) = process.machine.as_mut() else {
                inputs.clear();
                break;
            };
            if !count_event(&io) {
                return;
            }
            let t = io.global_now();
            let now = lock(&io.clock).now(t);
            {
                // Connection ids come from the run-wide counter: the lock
                // is held until the ids this input used are taken.
                let mut next_conn = lock(&io.shared.next_conn);
                let mut out = Outbox::with_first_conn(io.node, *next_conn);
                machine.handle(now, input, &mut out);
                items.extend(out.drain());
                for item in &items {
                    if let Output::Connect { conn, .. } = item {
                        *next_conn = (*next_conn).max(conn.0 + 1);
                    }
                }
            }
            // What this input's outputs answer comes before anything else.
            let mut next = VecDeque::new();
            let (node, owner) = (io.node, process.incarnation);
            for item in items.drain(..) {
                match item {
                    Output::Record(mut r) => {
                        r.t = t;
                        lock(&io.shared.trace).push(r);
                    }
                    Output::Send {
                        to: Dest::Node(to),
                        msg,
                        wait,
                    } => {
                        let result = send(&io, to, &msg).await;
                        if let Some(token) = wait.token() {
                            let to = Dest::Node(to);
                            next.push_back(Input::SendDone { to, token, result });
                        }
                    }
                    Output::Send {
                        to: Dest::Conn(conn),
                        msg,
                        wait,
                    } => {
                        lock(&io.shared.stats).sends += 1;
                        let peer = kernel.streams.peer(conn, node);
                        let result = match peer {
                            // The `break` fault: the write fails and the
                            // connection is gone; the reads fail too.
                            Some(p) if lock(&io.shared.broken).contains(&(node, p)) => {
                                kernel.streams.drop_endpoint(conn, node);
                                Err(SendError::ConnectionReset)
                            }
                            _ => kernel
                                .streams
                                .write(t, conn, node, owner, msg)
                                .map(|_| ())
                                .map_err(|_| SendError::BrokenPipe),
                        };
                        if let Some(token) = wait.token() {
                            let to = Dest::Conn(conn);
                            next.push_back(Input::SendDone { to, token, result });
                        }
                        if let (Some(peer), Err(SendError::ConnectionReset)) = (peer, result) {
                            let error = ConnError::Reset;
                            next.push_back(Input::Reset { conn, peer, error });
                        }
                    }
                    Output::Listen => kernel.listening = true,
                    Output::Connect { conn, to } => {
                        kernel.streams.connect(t, conn, node, owner, to)
                    }
                    Output::Close(conn) => kernel.streams.close(t, conn, node, owner),
                    Output::Reset(conn) => kernel.streams.reset(t, conn, node, owner),
                    Output::File { .. } => {
                        refuse(&io.shared, "the filesystem medium".into());
                    }
                    Output::Spawn { .. } | Output::Terminate(_) | Output::Exit => {
                        refuse(&io.shared, "the pipe medium (spawned processes)".into());
                    }
                    Output::Linger => {
                        refuse(
                            &io.shared,
                            "a stopped process that finishes its work first (Outbox::linger)"
                                .into(),
                        );
                    }
                }
                kernel.absorb(&process, &mut next, t, &io.shared);
            }
            while let Some(input) = next.pop_back() {
                inputs.push_front(input);
            }
        }
        let t = io.global_now();
        if ending {
            ending = false;
            inputs.clear();
            kernel.process_gone(t, &mut process, &std::mem::take(&mut unread));
            kernel.absorb(&process, &mut inputs, t, &io.shared);
            if closing {
                // The kernel's last FINs go out; nothing answers later.
                kernel.streams.flush_acks(t);
                kernel.absorb(&process, &mut inputs, t, &io.shared);
                transmit(&io, &mut kernel.outgoing).await;
                return;
            }
        }
        // ACKs that no same-instant answer carried leave alone.
        kernel.streams.flush_acks(t);
        kernel.absorb(&process, &mut inputs, t, &io.shared);
        transmit(&io, &mut kernel.outgoing).await;
        if !inputs.is_empty() && !process.paused {
            continue;
        }
        let deadline = process
            .machine
            .as_ref()
            .filter(|_| !process.paused)
            .and_then(Machine::poll_timeout)
            .map(|d| {
                let global = lock(&io.clock).global_at(d.at);
                io.instant_at(global)
            });
        let timer = async {
            match deadline {
                Some(at) => sleep_until(at).await,
                None => futures::future::pending().await,
            }
        };
        let rto = kernel.next_timer().map(|t| io.instant_at(t));
        let rto = async {
            match rto {
                Some(at) => sleep_until(at).await,
                None => futures::future::pending().await,
            }
        };
        select_biased! {
            control = io.control.next() => match control {
                Some(Control::Stop) | None => {
                    closing |= control.is_none();
                    if process.machine.is_some() {
                        process.paused = false;
                        unread = unread_conns(&inputs);
                        inputs.clear();
                        inputs.push_back(Input::Stop);
                    }
                    ending = true;
                }
                Some(Control::Kill) => {
                    let unread = unread_conns(&inputs);
                    inputs.clear();
                    let t = io.global_now();
                    kernel.process_gone(t, &mut process, &unread);
                    kernel.absorb(&process, &mut inputs, t, &io.shared);
                }
                Some(Control::Start) => {
                    process.machine = Some(factory());
                    process.incarnation += 1;
                    kernel.listening = false;
                    inputs.clear();
                    inputs.push_back(Input::Start);
                }
                Some(Control::Pause) => process.paused = true,
                Some(Control::Resume) => process.paused = false,
                Some(Control::ClockChanged) => {}
            },
            packet = incoming.next() => {
                let Some(Ok((bytes, from))) = packet else { continue };
                let (Some(from), Ok(packet)) =
                    (io.book.node(from), serde_json::from_slice::<Packet<M::Msg>>(&bytes))
                else {
                    continue; // not from a node of ours, or not a packet
                };
                if !count_event(&io) {
                    return;
                }
                let t = io.global_now();
                let listener = (kernel.listening && process.machine.is_some())
                    .then_some(process.incarnation);
                kernel.streams.on_packet(t, io.node, from, listener, packet);
                kernel.absorb(&process, &mut inputs, t, &io.shared);
            },
            received = io.endpoint.recv_from(TAG, &mut buf).fuse() => {
                let Ok((len, from)) = received else { continue };
                let (Some(from), Ok(msg)) =
                    (io.book.node(from), serde_json::from_slice(&buf[..len]))
                else {
                    continue; // not from a node of ours, or not a frame
                };
                if process.machine.is_some() {
                    inputs.push_back(Input::Recv { from, msg });
                }
            },
            () = rto.fuse() => {
                if !count_event(&io) {
                    return;
                }
                let t = io.global_now();
                kernel.fire_timers(t);
                kernel.absorb(&process, &mut inputs, t, &io.shared);
            },
            () = timer.fuse() => inputs.push_back(Input::Timeout),
        }
    }
}

/// Every stream packet `endpoint` receives, with its sender's address.
/// A stream, so that the receive in progress survives a select.
fn packets(endpoint: Arc<Endpoint>) -> impl Stream<Item = std::io::Result<(Vec<u8>, SocketAddr)>> {
    let buf = vec![0u8; MAX_FRAME_BYTES];
    futures::stream::unfold((endpoint, buf), |(endpoint, mut buf)| async move {
        let got = endpoint
            .recv_from(STREAM_TAG, &mut buf)
            .await
            .map(|(len, from)| (buf[..len].to_vec(), from));
        // A socket that fails (its network is down) fails for good.
        let failed = got.is_err();
        (!failed).then_some((got, (endpoint, buf)))
    })
}

/// Send the kernel's packets, in order. A packet lost or refused is the
/// network's business: TCP's timers repair it.
async fn transmit<M: Serialize>(io: &NodeIo, outgoing: &mut Vec<(NodeId, Packet<M>)>) {
    for (to, packet) in outgoing.drain(..) {
        let Ok(bytes) = serde_json::to_vec(&packet) else {
            refuse(&io.shared, "a message that does not serialize".into());
            continue;
        };
        let _ = io
            .endpoint
            .send_to(io.book.addr(to), STREAM_TAG, &bytes)
            .await;
    }
}

/// Fail the run as unsupported (the first reason stays).
pub(crate) fn refuse(shared: &Shared, why: String) {
    lock(&shared.unsupported).get_or_insert(why);
}

/// Count one event against the run's limit; false once any limit is hit.
fn count_event(io: &NodeIo) -> bool {
    if lock(&io.shared.unsupported).is_some() {
        return false;
    }
    let mut hit = lock(&io.shared.limit_hit);
    if hit.is_some() {
        return false;
    }
    let mut stats = lock(&io.shared.stats);
    stats.events += 1;
    if stats.events > io.shared.max_events {
        *hit = Some(LimitError::Events {
            limit: io.shared.max_events,
            at: io.global_now(),
        });
        return false;
    }
    true
}

async fn send<T: Serialize>(io: &NodeIo, to: NodeId, msg: &T) -> Result<(), SendError> {
    lock(&io.shared.stats).sends += 1;
    if lock(&io.shared.broken).contains(&(io.node, to)) {
        return Err(SendError::ConnectionReset);
    }
    let Ok(bytes) = serde_json::to_vec(msg) else {
        refuse(&io.shared, "a message that does not serialize".into());
        return Ok(());
    };
    // A datagram lost or refused is the network's business, as for a
    // fire-and-forget write: the machine learns of it by its timers.
    let _ = io.endpoint.send_to(io.book.addr(to), TAG, &bytes).await;
    Ok(())
}

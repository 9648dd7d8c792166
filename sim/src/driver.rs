//! The async driver: how a pure [`Machine`] runs on a transport, the loop a
//! user deploys. It is written against madsim's API (`madsim::net::Endpoint`,
//! `madsim::time`), which is tokio and real sockets in a normal build and
//! madsim's simulated network and clock under `--cfg madsim`; the
//! [`madsim engine`](crate::madsim_engine) runs it that way.
//!
//! # Drive loop
//!
//! ```text
//! inputs = [Start]
//! loop {
//!     for each pending input:
//!         machine.handle(clock.now(global time), input, outbox)
//!         carry out the outbox in order:
//!             record      -> the sink, stamped with the global time
//!             send        -> endpoint.send_to(addr of `to`, TAG, encoded frame)
//!             awaited/try -> as send; Input::SendDone is the next input
//!             listen      -> TcpListener on the node's port + 1, a task accepts
//!             connect     -> a task connects: Input::Connected / ConnectFailed
//!             write(conn) -> one length-prefixed frame on the stream (queued
//!                            until connected); a dead peer -> SendDone Ok, Reset
//!             close/reset -> drop the stream (reset: an ABORT frame first)
//!     if the input was Stop: return
//!     wait for the first of (in this priority when several are ready):
//!         a control message  -> Stop, or re-read the deadline (clock changed)
//!         a connection event -> Accepted / Data / Closed / Reset (from the
//!                               connection tasks), or Connected / ConnectFailed
//!         a frame            -> Input::Recv { from, msg }
//!         poll_timeout()     -> Input::Timeout, slept until on the node's clock
//! }
//! ```
//!
//! Everything the machine does not own stays out here: the sockets, the
//! clock, and the encoding (JSON via serde, one datagram per message, one
//! frame per message on a connection). How connections map onto madsim's
//! `TcpStream`, and what is refused, is in `docs/engines.md`, "Connections".

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures::channel::oneshot;
use futures::{select_biased, FutureExt, StreamExt};
use madsim::net::Endpoint;
#[cfg(madsim)]
use madsim::net::{TcpListener, TcpStream};
use madsim::task::spawn;
use madsim::time::{sleep_until, Instant};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{split, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
#[cfg(not(madsim))]
use tokio::net::{TcpListener, TcpStream};

use crate::clock::Clock;
use crate::engine::{LimitError, Output, Stats};
use crate::time::Timestamp;
use crate::trace::Trace;
use crate::{ConnError, ConnId, Dest, Input, Machine, NodeId, Outbox, SendError};

/// The endpoint tag every heartsim message carries.
pub const TAG: u64 = 0x6865_6172_7473_696d; // "heartsim"

/// Larger datagrams are cut by the endpoint; no frame comes near it.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// What whoever runs the node tells its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Graceful shutdown: the machine gets `Input::Stop`, the driver returns.
    Stop,
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
    /// Why this run cannot carry connections, if it cannot, decided from
    /// the world before the run. It fails the run at the first connection
    /// operation: a run whose machines use datagrams only is unaffected.
    pub stream_refusal: Option<String>,
    /// Whether a machine has opened a connection in this run (listening
    /// alone does not count: a connect to a host that is down is refused
    /// by itself).
    pub streams_used: Mutex<bool>,
    /// Whose host is up (started and not crashed), by node.
    pub hosts_up: Mutex<Vec<bool>>,
    /// The next connection id: ids are unique in the run, as on the main
    /// engine, though each node's driver has an outbox of its own.
    pub next_conn: Mutex<u64>,
}

impl Shared {
    /// A run's shared state: every host down, no connection yet.
    pub fn new(trace: Trace, nodes: usize, max_events: u64) -> Self {
        Shared {
            trace: Mutex::new(trace),
            broken: Mutex::new(BTreeSet::new()),
            stats: Mutex::new(Stats::default()),
            max_events,
            limit_hit: Mutex::new(None),
            unsupported: Mutex::new(None),
            stream_refusal: None,
            streams_used: Mutex::new(false),
            hosts_up: Mutex::new(vec![false; nodes]),
            next_conn: Mutex::new(1),
        }
    }
}

/// Why a connect to a host that is down is refused.
pub const CONNECT_TO_DOWN_HOST: &str =
    "a connect to a host that is down (not started yet, or crashed): madsim \
     refuses it at once, as no node has the address (madsim 0.2.34 \
     src/sim/net/network.rs:272-290, mod.rs:351-354), where TCP retries its \
     SYN for 127 s (docs/streams.md)";

/// Lock a mutex nobody can have poisoned: drivers do not panic while
/// holding one, and a panic ends the whole simulation anyway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One node's surroundings.
pub struct NodeIo {
    pub node: NodeId,
    pub endpoint: Endpoint,
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

/// Run `machine` on `io` until it is stopped, the node is killed (the
/// future is dropped), or a run limit is hit.
pub async fn drive<M>(mut machine: M, mut io: NodeIo)
where
    M: Machine,
    M::Msg: Serialize + DeserializeOwned,
{
    let mut conns = Conns::new();
    let mut inputs = VecDeque::from([Input::Start]);
    let mut buf = vec![0u8; MAX_FRAME_BYTES];
    let mut items = Vec::new();
    loop {
        let mut stopping = false;
        while let Some(input) = inputs.pop_front() {
            stopping |= matches!(input, Input::Stop);
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
            for item in items.drain(..) {
                match item {
                    Output::Record(mut r) => {
                        r.t = t;
                        lock(&io.shared.trace).push(r);
                    }
                    Output::Send {
                        to: Dest::Node(node),
                        msg,
                        wait,
                    } => {
                        let result = send(&io, node, &msg).await;
                        if let Some(token) = wait.token() {
                            let to = Dest::Node(node);
                            inputs.push_back(Input::SendDone { to, token, result });
                        }
                    }
                    Output::Send {
                        to: Dest::Conn(conn),
                        msg,
                        wait,
                    } => {
                        if !admit_streams(&io) {
                            return;
                        }
                        lock(&io.shared.stats).sends += 1;
                        let Ok(bytes) = encode(&io, &msg) else { return };
                        let (result, reset) = conns.write(conn, bytes).await;
                        if let Some(token) = wait.token() {
                            let to = Dest::Conn(conn);
                            inputs.push_back(Input::SendDone { to, token, result });
                        }
                        inputs.extend(reset);
                    }
                    Output::Listen => {
                        if !admit_streams(&io) {
                            return;
                        }
                        if let Err(why) = conns.listen(&io).await {
                            refuse(&io.shared, why);
                            return;
                        }
                    }
                    Output::Connect { conn, to } => {
                        if !admit_streams(&io) {
                            return;
                        }
                        if !lock(&io.shared.hosts_up)
                            .get(to.0)
                            .copied()
                            .unwrap_or(false)
                        {
                            refuse(&io.shared, CONNECT_TO_DOWN_HOST.into());
                            return;
                        }
                        *lock(&io.shared.streams_used) = true;
                        conns.connect(&io, conn, to);
                    }
                    Output::Close(conn) => conns.close(conn),
                    Output::Reset(conn) => conns.reset(conn).await,
                }
            }
        }
        if stopping {
            return;
        }
        let deadline = machine.poll_timeout().map(|d| {
            let global = lock(&io.clock).global_at(d.at);
            io.instant_at(global)
        });
        let timer = async {
            match deadline {
                Some(at) => sleep_until(at).await,
                None => futures::future::pending().await,
            }
        };
        select_biased! {
            control = io.control.next() => match control {
                Some(Control::Stop) | None => inputs.push_back(Input::Stop),
                Some(Control::ClockChanged) => {}
            },
            event = conns.events.next() => {
                if let Some(event) = event {
                    conns.on_event(&io, event, &mut inputs).await;
                }
            },
            received = io.endpoint.recv_from(TAG, &mut buf).fuse() => {
                let Ok((len, from)) = received else { continue };
                let (Some(from), Ok(msg)) =
                    (io.book.node(from), serde_json::from_slice(&buf[..len]))
                else {
                    continue; // not from a node of ours, or not a frame
                };
                inputs.push_back(Input::Recv { from, msg });
            },
            () = timer.fuse() => inputs.push_back(Input::Timeout),
        }
    }
}

/// A machine's first use of a connection: refused if the run cannot carry
/// connections (see [`Shared::stream_refusal`]); false then.
fn admit_streams(io: &NodeIo) -> bool {
    if let Some(why) = &io.shared.stream_refusal {
        refuse(&io.shared, why.clone());
        return false;
    }
    true
}

/// Fail the run as unsupported (the first reason stays).
pub(crate) fn refuse(shared: &Shared, why: String) {
    lock(&shared.unsupported).get_or_insert(why);
}

/// A message as a frame's payload, or the run fails as unsupported.
fn encode<T: Serialize>(io: &NodeIo, msg: &T) -> Result<Vec<u8>, ()> {
    serde_json::to_vec(msg).map_err(|e| {
        refuse(
            &io.shared,
            format!("a message that does not serialize ({e})"),
        );
    })
}

/// Count one input against the run's limit; false once any limit is hit.
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
    let bytes = serde_json::to_vec(msg).expect("frames serialize");
    // A datagram lost or refused is the network's business, as for a
    // fire-and-forget write: the machine learns of it by its timers.
    let _ = io.endpoint.send_to(io.book.addr(to), TAG, &bytes).await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Connections
//
// A connection is a TCP stream (madsim's `TcpStream` under `--cfg madsim`,
// tokio's otherwise) carrying frames: a kind byte, a big-endian u32 payload
// length, then the payload. The connecting side's first frame is `HELLO`
// with `[conn, node]`: the run-wide connection id its outbox handed out and
// its own node id, so that both ends name the connection alike. Each later
// frame is one message (`DATA`, serde JSON) or `ABORT`, the stand-in for a
// RST (madsim's streams have none): the reader reports it as a reset.
//
// The driver keeps each connection's write half and writes inline, as it
// sends datagrams. A task per connection reads frames and hands them to the
// driver over one channel; it ends when the driver drops the connection's
// stop sender, which drops the stream: the peer reads end of stream.
// ---------------------------------------------------------------------------

const FRAME_DATA: u8 = 0;
const FRAME_HELLO: u8 = 1;
const FRAME_ABORT: u8 = 2;

/// A frame longer than this is a protocol error (the stream is reset).
const MAX_STREAM_FRAME: u32 = 16 << 20;

type Writer = WriteHalf<TcpStream>;
type Reader = ReadHalf<TcpStream>;

/// Where a node's connections listen: the node's port + 1 (its datagram
/// endpoint has the port itself; outside madsim that is a TCP listener too).
fn stream_addr(mut addr: SocketAddr) -> SocketAddr {
    addr.set_port(addr.port().wrapping_add(1));
    addr
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(5 + payload.len());
    bytes.push(kind);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

async fn write_frame(w: &mut Writer, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

async fn read_frame(r: &mut Reader) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_STREAM_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too long",
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok((head[0], payload))
}

/// What a node's connection tasks tell its driver.
enum ConnEvent {
    /// A connect finished.
    Connected {
        conn: ConnId,
        result: std::io::Result<Writer>,
    },
    /// A peer connected and said which connection this is.
    Accepted {
        conn: ConnId,
        peer: NodeId,
        writer: Writer,
        stop: oneshot::Sender<()>,
    },
    Frame {
        conn: ConnId,
        payload: Vec<u8>,
    },
    /// End of stream: the peer closed, or its process is gone.
    Eof {
        conn: ConnId,
    },
    /// The peer aborted (`ABORT`), or the stream failed.
    Aborted {
        conn: ConnId,
    },
}

enum ConnState {
    /// Writes made before the connect finishes, as frames.
    Connecting(Vec<Vec<u8>>),
    Open(Writer),
}

struct Conn {
    peer: NodeId,
    state: ConnState,
    /// Dropped with the connection: its task ends and the stream with it.
    _stop: oneshot::Sender<()>,
}

/// One process's connections.
struct Conns {
    conns: BTreeMap<ConnId, Conn>,
    events: UnboundedReceiver<ConnEvent>,
    events_tx: UnboundedSender<ConnEvent>,
    /// The accept loop's stop sender, once the machine listens.
    listener: Option<oneshot::Sender<()>>,
}

impl Conns {
    fn new() -> Self {
        let (events_tx, events) = unbounded();
        Conns {
            conns: BTreeMap::new(),
            events,
            events_tx,
            listener: None,
        }
    }

    async fn listen(&mut self, io: &NodeIo) -> Result<(), String> {
        if self.listener.is_some() {
            return Ok(());
        }
        let addr = stream_addr(io.book.addr(io.node));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listening on {addr} failed ({e})"))?;
        let (stop, stopped) = oneshot::channel();
        self.listener = Some(stop);
        drop(spawn(accept_loop(
            listener,
            io.book.len(),
            self.events_tx.clone(),
            stopped,
        )));
        Ok(())
    }

    fn connect(&mut self, io: &NodeIo, conn: ConnId, to: NodeId) {
        let (stop, stopped) = oneshot::channel();
        self.conns.insert(
            conn,
            Conn {
                peer: to,
                state: ConnState::Connecting(Vec::new()),
                _stop: stop,
            },
        );
        let addr = stream_addr(io.book.addr(to));
        drop(spawn(connect_task(
            conn,
            addr,
            self.events_tx.clone(),
            stopped,
        )));
    }

    /// A write: the outcome for `SendDone`, and a `Reset` input when the
    /// peer's end turned out to be gone.
    async fn write<M>(
        &mut self,
        conn: ConnId,
        bytes: Vec<u8>,
    ) -> (Result<(), SendError>, Option<Input<M>>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return (Err(SendError::BrokenPipe), None);
        };
        match &mut c.state {
            ConnState::Connecting(queued) => {
                queued.push(frame(FRAME_DATA, &bytes));
                (Ok(()), None)
            }
            ConnState::Open(writer) => {
                if write_frame(writer, &frame(FRAME_DATA, &bytes))
                    .await
                    .is_ok()
                {
                    return (Ok(()), None);
                }
                // madsim fails a write at once when the peer's stream is
                // gone. Linux takes the write, and the peer's RST resets
                // the connection a round trip later: report it so.
                let peer = c.peer;
                self.conns.remove(&conn);
                let reset = Input::Reset {
                    conn,
                    peer,
                    error: ConnError::Reset,
                };
                (Ok(()), Some(reset))
            }
        }
    }

    /// Close: the stream is dropped (after what was written); the peer
    /// reads end of stream. A connect still in progress is abandoned.
    fn close(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Reset: an `ABORT` frame, then the stream is dropped. A connect
    /// still in progress is abandoned.
    async fn reset(&mut self, conn: ConnId) {
        if let Some(Conn {
            state: ConnState::Open(mut writer),
            ..
        }) = self.conns.remove(&conn)
        {
            let _ = write_frame(&mut writer, &frame(FRAME_ABORT, &[])).await;
        }
    }

    async fn on_event<M: DeserializeOwned>(
        &mut self,
        io: &NodeIo,
        event: ConnEvent,
        inputs: &mut VecDeque<Input<M>>,
    ) {
        match event {
            ConnEvent::Connected { conn, result } => {
                // Unknown: closed or reset while connecting (abandoned).
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let peer = c.peer;
                let mut writer = match result {
                    Ok(writer) => writer,
                    Err(e) => {
                        self.conns.remove(&conn);
                        let error = match e.kind() {
                            std::io::ErrorKind::TimedOut => ConnError::TimedOut,
                            std::io::ErrorKind::ConnectionRefused => ConnError::Refused,
                            _ => ConnError::Reset,
                        };
                        inputs.push_back(Input::ConnectFailed { conn, peer, error });
                        return;
                    }
                };
                let queued = match &mut c.state {
                    ConnState::Connecting(queued) => std::mem::take(queued),
                    ConnState::Open(_) => return,
                };
                inputs.push_back(Input::Connected { conn, peer });
                let hello = format!("[{},{}]", conn.0, io.node.0);
                let mut ok = write_frame(&mut writer, &frame(FRAME_HELLO, hello.as_bytes()))
                    .await
                    .is_ok();
                for bytes in queued {
                    ok = ok && write_frame(&mut writer, &bytes).await.is_ok();
                }
                if ok {
                    c.state = ConnState::Open(writer);
                } else {
                    self.conns.remove(&conn);
                    inputs.push_back(Input::Reset {
                        conn,
                        peer,
                        error: ConnError::Reset,
                    });
                }
            }
            ConnEvent::Accepted {
                conn,
                peer,
                writer,
                stop,
            } => {
                if self.conns.contains_key(&conn) {
                    return; // not a connection id of this run: drop it
                }
                self.conns.insert(
                    conn,
                    Conn {
                        peer,
                        state: ConnState::Open(writer),
                        _stop: stop,
                    },
                );
                inputs.push_back(Input::Accepted { conn, peer });
            }
            ConnEvent::Frame { conn, payload } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let peer = c.peer;
                match serde_json::from_slice(&payload) {
                    Ok(msg) => inputs.push_back(Input::Data { conn, peer, msg }),
                    Err(_) => {
                        // Not a message of ours: a protocol error.
                        self.reset(conn).await;
                        inputs.push_back(Input::Reset {
                            conn,
                            peer,
                            error: ConnError::Reset,
                        });
                    }
                }
            }
            ConnEvent::Eof { conn } => {
                if let Some(c) = self.conns.get(&conn) {
                    let peer = c.peer;
                    inputs.push_back(Input::Closed { conn, peer });
                }
            }
            ConnEvent::Aborted { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    inputs.push_back(Input::Reset {
                        conn,
                        peer: c.peer,
                        error: ConnError::Reset,
                    });
                }
            }
        }
    }
}

/// Open a connection; then read it until stopped.
async fn connect_task(
    conn: ConnId,
    addr: SocketAddr,
    events: UnboundedSender<ConnEvent>,
    stop: oneshot::Receiver<()>,
) {
    match TcpStream::connect(addr).await {
        Err(e) => {
            let _ = events.unbounded_send(ConnEvent::Connected {
                conn,
                result: Err(e),
            });
        }
        Ok(stream) => {
            let (reader, writer) = split(stream);
            let connected = ConnEvent::Connected {
                conn,
                result: Ok(writer),
            };
            if events.unbounded_send(connected).is_ok() {
                read_loop(conn, reader, events, stop).await;
            }
        }
    }
}

/// Accept connections until stopped; each gets a task of its own.
async fn accept_loop(
    listener: TcpListener,
    nodes: usize,
    events: UnboundedSender<ConnEvent>,
    stop: oneshot::Receiver<()>,
) {
    // Fused: a bare receiver whose sender is gone reports itself
    // terminated, and `select!` would never poll it.
    let mut stop = stop.fuse();
    loop {
        let accepted = select_biased! {
            _ = stop => return,
            accepted = listener.accept().fuse() => accepted,
        };
        let Ok((stream, _)) = accepted else { return };
        drop(spawn(accepted_task(stream, nodes, events.clone())));
    }
}

/// Read an accepted connection's `HELLO`, hand the connection to the
/// driver, then read it until stopped.
async fn accepted_task(stream: TcpStream, nodes: usize, events: UnboundedSender<ConnEvent>) {
    let (mut reader, writer) = split(stream);
    // A connect abandoned before its HELLO reads as end of stream: the
    // machine never hears of it, as on the main engine.
    let Ok((FRAME_HELLO, hello)) = read_frame(&mut reader).await else {
        return;
    };
    let Ok((conn, peer)) = serde_json::from_slice::<(u64, usize)>(&hello) else {
        return;
    };
    if peer >= nodes {
        return;
    }
    let (stop, stopped) = oneshot::channel();
    let accepted = ConnEvent::Accepted {
        conn: ConnId(conn),
        peer: NodeId(peer),
        writer,
        stop,
    };
    if events.unbounded_send(accepted).is_ok() {
        read_loop(ConnId(conn), reader, events, stopped).await;
    }
}

/// Hand every frame of `reader` to the driver until end of stream, an
/// abort, or the driver drops the connection.
async fn read_loop(
    conn: ConnId,
    mut reader: Reader,
    events: UnboundedSender<ConnEvent>,
    stop: oneshot::Receiver<()>,
) {
    let mut stop = stop.fuse(); // see `accept_loop`
    loop {
        let (event, last) = select_biased! {
            _ = stop => return,
            frame = read_frame(&mut reader).fuse() => match frame {
                Ok((FRAME_DATA, payload)) => (ConnEvent::Frame { conn, payload }, false),
                Ok((FRAME_ABORT, _)) => (ConnEvent::Aborted { conn }, true),
                Ok(_) => continue, // a kind this driver does not know
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    (ConnEvent::Eof { conn }, true)
                }
                Err(_) => (ConnEvent::Aborted { conn }, true),
            },
        };
        if events.unbounded_send(event).is_err() || last {
            return;
        }
    }
}

//! The discrete-event engine: a queue ordered by `(time, seq)`, nodes that
//! host machines, the network, scheduled faults and the drive loop.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use crate::clock::{Clock, Now};
use crate::fs::{self, Disks, Errno, FileDone, FileOp};
use crate::net::{Fate, LinkConfig, Network, Partition};
use crate::stream::{ConnError, ConnId, Dest, Effect, Packet, Streams, TcpConfig};
use crate::time::{Duration, Timestamp};
use crate::trace::{kind, Level, Record, Trace};
use crate::NodeId;

/// A deadline on the node's own monotonic clock, with why it is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: Timestamp,
    pub reason: &'static str,
}

/// Why a send failed. Returned to the machine in [`Input::SendDone`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection was reset: the `break` fault.
    #[error("connection reset")]
    ConnectionReset,
    /// A write on a connection that is gone (reset, timed out, closed by
    /// this node, or never this process's): `EPIPE`.
    #[error("broken pipe")]
    BrokenPipe,
}

/// Everything a machine can be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<M> {
    /// The node started (first start, restart or rejoin: always a fresh machine).
    Start,
    /// Graceful shutdown; the machine gets no input after this one.
    Stop,
    /// The deadline from `poll_timeout` has passed. Harmless if early or repeated.
    Timeout,
    /// A datagram.
    Recv { from: NodeId, msg: M },
    /// Outcome of a send made with [`Outbox::send_awaited`], handed back before
    /// any other input, as an `await` on a local write would return.
    SendDone {
        to: Dest,
        token: u64,
        result: Result<(), SendError>,
    },
    /// A connection this node opened with [`Outbox::connect`] is established.
    Connected { conn: ConnId, peer: NodeId },
    /// A connect failed: refused (nobody listens there) or timed out.
    ConnectFailed {
        conn: ConnId,
        peer: NodeId,
        error: ConnError,
    },
    /// A peer connected to this node, which [`Outbox::listen`]s.
    Accepted { conn: ConnId, peer: NodeId },
    /// What the peer wrote on a connection, once and in order.
    Data { conn: ConnId, peer: NodeId, msg: M },
    /// The peer closed its end (FIN): nothing more will come. Writing is
    /// still possible (a peer that closed fully answers with a RST).
    Closed { conn: ConnId, peer: NodeId },
    /// The connection is gone: a RST came, or retransmissions ran out.
    Reset {
        conn: ConnId,
        peer: NodeId,
        error: ConnError,
    },
}

/// Whether, and how, the sender waits for a send's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Fire and forget.
    No,
    /// A blocking write (`await writer.drain()`): on a stalled link the
    /// `SendDone` comes only when the link is released.
    Write(u64),
    /// A non-blocking enqueue (tokio `try_send`): `SendDone` at once, even on
    /// a stalled link (the queue's capacity is not modelled).
    Try(u64),
}

#[derive(Debug)]
pub(crate) enum Output<M> {
    Send {
        to: Dest,
        msg: M,
        wait: Wait,
    },
    Record(Record),
    Listen,
    Connect {
        conn: ConnId,
        to: NodeId,
    },
    Close(ConnId),
    Reset(ConnId),
    File {
        op: FileOp,
        token: u64,
    },
    Spawn {
        conn: ConnId,
        name: String,
        spec: M,
        ready_after: Duration,
    },
    Terminate(ConnId),
    Exit,
    Linger,
}

/// Where a machine puts what it wants done.
#[derive(Debug)]
pub struct Outbox<M> {
    items: Vec<Output<M>>,
    node: NodeId,
    /// Connection ids handed out so far (the engine keeps one outbox, so
    /// ids are unique in the run).
    next_conn: u64,
}

impl<M> Outbox<M> {
    pub fn new(node: NodeId) -> Self {
        Outbox {
            items: Vec::new(),
            node,
            next_conn: 1,
        }
    }
    /// An outbox whose connection ids start at `first`. A driver that
    /// keeps one outbox per node (the async driver) takes `first` from a
    /// run-wide counter, so that ids stay unique in the run.
    pub fn with_first_conn(node: NodeId, first: u64) -> Self {
        Outbox {
            next_conn: first,
            ..Outbox::new(node)
        }
    }
    /// Fire-and-forget send: a datagram to a node, or a write on a
    /// connection (which the stream delivers or resets, never loses).
    pub fn send(&mut self, to: impl Into<Dest>, msg: M) {
        self.items.push(Output::Send {
            to: to.into(),
            msg,
            wait: Wait::No,
        });
    }
    /// Accept connections from now on (until this process ends).
    pub fn listen(&mut self) {
        self.items.push(Output::Listen);
    }
    /// Open a connection to `to`; `Input::Connected` or
    /// `Input::ConnectFailed` follows. Writes made before it is established
    /// go out once it is.
    pub fn connect(&mut self, to: NodeId) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.items.push(Output::Connect { conn, to });
        conn
    }
    /// Close this end: a FIN after everything written.
    pub fn close(&mut self, conn: ConnId) {
        self.items.push(Output::Close(conn));
    }
    /// Abort the connection: a RST, at once.
    pub fn reset(&mut self, conn: ConnId) {
        self.items.push(Output::Reset(conn));
    }
    /// An operation on the host's disk (`sim/src/fs.rs`): its outcome
    /// comes back as [`Machine::file_done`] made it, an `Input::Recv` from
    /// the node itself: at once, or after the disk's write time for a
    /// write. The process is blocked meanwhile as upstream's thread is;
    /// the machine should ask for nothing else until it is answered.
    pub fn file(&mut self, op: FileOp, token: u64) {
        self.items.push(Output::File { op, token });
    }
    /// Start a child process on this host (the pipe medium,
    /// `docs/pipes.md`): a new node named `name`, whose machine is
    /// [`Machine::spawned`]`(spec)`, joined to this process by a pipe, the
    /// returned connection. The child gets `Input::Start` after
    /// `ready_after` (the interpreter and model loading); what is written
    /// on the pipe before then waits for it. Frames arrive as
    /// `Input::Data` at the same instant, in order, never lost; the
    /// child's end is seen by the parent as `Input::Closed` at once, and a
    /// write after it fails with `broken pipe`.
    pub fn spawn(&mut self, name: String, spec: M, ready_after: Duration) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.items.push(Output::Spawn {
            conn,
            name,
            spec,
            ready_after,
        });
        conn
    }
    /// SIGTERM the child on the pipe `conn`: it ends at once.
    pub fn terminate(&mut self, conn: ConnId) {
        self.items.push(Output::Terminate(conn));
    }
    /// This process ends (returns from its main, or dies by its own hand).
    pub fn exit(&mut self) {
        self.items.push(Output::Exit);
    }
    /// Answering `Input::Stop`: the process is not done yet (a thread
    /// finishing the write it is in, a runtime waiting for its executor's
    /// threads), so it runs on, timers, file operations and connections
    /// as before, until it calls [`Self::exit`] (or is killed, or its host
    /// crashes). Without it a stopped process ends once `Input::Stop` is
    /// handled. Outside `Input::Stop` it means nothing. The madsim engine
    /// refuses it.
    pub fn linger(&mut self) {
        self.items.push(Output::Linger);
    }
    /// Whether the machine asked to linger, for tests.
    pub fn lingers(&self) -> bool {
        self.items.iter().any(|o| matches!(o, Output::Linger))
    }
    /// Children spawned so far `(conn, name)`, for tests that drive a
    /// machine by hand.
    pub fn spawns(&self) -> impl Iterator<Item = (ConnId, &str)> {
        self.items.iter().filter_map(|o| match o {
            Output::Spawn { conn, name, .. } => Some((*conn, name.as_str())),
            _ => None,
        })
    }
    /// Children terminated so far, for tests that drive a machine by hand.
    pub fn terminates(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.items.iter().filter_map(|o| match o {
            Output::Terminate(conn) => Some(*conn),
            _ => None,
        })
    }
    /// Whether the machine asked to exit, for tests.
    pub fn exits(&self) -> bool {
        self.items.iter().any(|o| matches!(o, Output::Exit))
    }
    /// File operations queued so far, for tests that drive a machine by hand.
    pub fn files(&self) -> impl Iterator<Item = (&FileOp, u64)> {
        self.items.iter().filter_map(|o| match o {
            Output::File { op, token } => Some((op, *token)),
            _ => None,
        })
    }
    /// A blocking write whose outcome the machine waits for: it gets
    /// `Input::SendDone { token, .. }` next, before any other input, unless
    /// the link is stalled; then only when the link is released (the machine
    /// keeps receiving other inputs meanwhile, and may give up on a timer).
    pub fn send_awaited(&mut self, to: impl Into<Dest>, msg: M, token: u64) {
        self.items.push(Output::Send {
            to: to.into(),
            msg,
            wait: Wait::Write(token),
        });
    }
    /// A non-blocking enqueue with an outcome: `Input::SendDone` next, even
    /// on a stalled link.
    pub fn try_send(&mut self, to: impl Into<Dest>, msg: M, token: u64) {
        self.items.push(Output::Send {
            to: to.into(),
            msg,
            wait: Wait::Try(token),
        });
    }
    /// A model decision for the trace (`sweep`, `ping`, `evict`, ...). The
    /// time is filled in by the engine.
    pub fn record(
        &mut self,
        kind: &'static str,
        peer: Option<NodeId>,
        reason: Option<Cow<'static, str>>,
        msg: Option<Cow<'static, str>>,
    ) {
        self.items.push(Output::Record(Record {
            t: Timestamp::ZERO,
            node: Some(self.node),
            kind,
            peer,
            reason,
            msg,
            level: Level::Decision,
        }));
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Sends queued so far, for tests that drive a machine by hand.
    pub fn sends(&self) -> impl Iterator<Item = (Dest, &M, Option<u64>)> {
        self.items.iter().filter_map(|o| match o {
            Output::Send { to, msg, wait } => Some((*to, msg, wait.token())),
            _ => None,
        })
    }
    /// Connections closed so far, for tests that drive a machine by hand.
    pub fn closes(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.items.iter().filter_map(|o| match o {
            Output::Close(conn) => Some(*conn),
            _ => None,
        })
    }
    /// Records queued so far, for tests that drive a machine by hand.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.items.iter().filter_map(|o| match o {
            Output::Record(r) => Some(r),
            _ => None,
        })
    }
    pub fn clear(&mut self) {
        self.items.clear();
    }
    /// Take what the machine asked for, in order (for drivers in this crate).
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Output<M>> {
        self.items.drain(..)
    }
}

impl Wait {
    /// The token a `SendDone` must carry, if the sender waits for one.
    pub(crate) fn token(self) -> Option<u64> {
        match self {
            Wait::No => None,
            Wait::Write(t) | Wait::Try(t) => Some(t),
        }
    }
}

/// A sans-IO state machine the engine can host. The drive contract:
/// feed inputs in time order with the node's clock readings; after each
/// `handle`, perform the outbox and re-read `poll_timeout`.
pub trait Machine {
    type Msg: Clone;
    fn handle(&mut self, now: Now, input: Input<Self::Msg>, out: &mut Outbox<Self::Msg>);
    /// The next deadline on this node's monotonic clock, if any.
    fn poll_timeout(&self) -> Option<Deadline>;
    /// The message as the trace shows it (upstream wire text where there is one).
    fn describe(msg: &Self::Msg) -> Cow<'static, str>;
    /// A file operation's outcome as this machine's message, handed back
    /// as `Input::Recv` from the node itself. Machines that use no file
    /// keep the default (outcomes are dropped).
    fn file_done(done: FileDone) -> Option<Self::Msg> {
        let _ = done;
        None
    }
    /// The machine of a child process started by [`Outbox::spawn`] with
    /// `spec`. Machines that spawn nothing keep the default; `None` makes
    /// the child exit at once.
    fn spawned(spec: Self::Msg) -> Option<Self>
    where
        Self: Sized,
    {
        let _ = spec;
        None
    }
}

/// A scheduled change to the world.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    Start(NodeId),
    Stop(NodeId),
    /// The process dies, its host stays up: the kernel closes its
    /// connections (a FIN to each peer) and refuses new ones.
    Kill(NodeId),
    /// The host dies: silence. Its connections vanish; after `Restart`, a
    /// packet on one of them is answered with a RST.
    Crash(NodeId),
    Restart(NodeId),
    Partition(Vec<Partition>),
    Heal,
    ClockJump {
        node: NodeId,
        by_us: i64,
    },
    Link {
        from: NodeId,
        to: NodeId,
        config: LinkConfig,
    },
    Break {
        from: NodeId,
        to: NodeId,
    },
    Repair {
        from: NodeId,
        to: NodeId,
    },
    /// Messages that reach the end of `from -> to` wait there until
    /// `Release` (turmoil's hold). Writes complete: the buffer has room.
    Hold {
        from: NodeId,
        to: NodeId,
    },
    /// As `Hold`, and blocking writes on the link do not complete until
    /// `Release`: the receiver stopped reading and the buffers are full.
    Stall {
        from: NodeId,
        to: NodeId,
    },
    /// End a hold or stall: parked messages are delivered now, in order,
    /// and blocked writes complete.
    Release {
        from: NodeId,
        to: NodeId,
    },
    /// SIGSTOP: the node's messages queue and its timer does not fire; its
    /// clocks keep running.
    Pause(NodeId),
    /// SIGCONT: queued messages are delivered in arrival order, then the
    /// timer fires if it came due.
    Resume(NodeId),
    /// From now on the node's monotonic clock runs at this drift.
    ClockDrift {
        node: NodeId,
        ppm: i64,
    },
    /// A host loses power (or its kernel crashes): every process on it
    /// ends as in `Crash`, and its disk keeps what its durability says
    /// (`sim/src/fs.rs`).
    PowerLoss {
        host: Host,
    },
    /// Writes under `path` (every path if `None`) fail with `errno` from
    /// now on; `errno: None` clears them.
    DiskError {
        host: Host,
        path: Option<String>,
        errno: Option<Errno>,
    },
    /// Every write on the host takes this long from now on.
    SlowDisk {
        host: Host,
        write_us: u64,
    },
    /// The next write under `path` (any if `None`) lands half written.
    TornWrite {
        host: Host,
        path: Option<String>,
    },
    /// The node's next rename kills its process instead: it dies between
    /// its temp write and the rename.
    KillBeforeRename(NodeId),
}

/// A host as faults name it: its index in [`Disks`] and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub index: usize,
    pub name: String,
}

/// Bounds on one run. Hitting `max_events` or `max_queue` is an error; `end`
/// is where the scenario stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub end: Timestamp,
    pub max_events: u64,
    pub max_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            end: Timestamp::from_us(3_600_000_000),
            max_events: 50_000_000,
            max_queue: 5_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    #[error("event limit hit: more than {limit} events by {at} (raise [limits] max_events, or look for a machine that re-arms a timer in the past)")]
    Events { limit: u64, at: Timestamp },
    #[error("queue limit hit: more than {limit} queued events at {at} (raise [limits] max_queue, or look for a message storm)")]
    Queue { limit: usize, at: Timestamp },
    #[error("process limit hit: more than {limit} processes by {at} (MAX_PROCESSES; look for a machine that spawns in a loop)")]
    Processes { limit: usize, at: Timestamp },
}

enum Event<M> {
    Deliver {
        from: NodeId,
        to: NodeId,
        incarnation: u32,
        msg: M,
    },
    Timer {
        node: NodeId,
        generation: u64,
    },
    /// A blocking write on a stalled link completes (on release).
    WriteDone {
        node: NodeId,
        incarnation: u32,
        to: Dest,
        token: u64,
    },
    Fault(usize),
    /// A stream packet reaches `to`'s host.
    Packet {
        from: NodeId,
        to: NodeId,
        packet: Packet<M>,
    },
    /// A connection endpoint's retransmission timer (kept apart from the
    /// queue, in `rto_queue`, so that a cancelled one costs nothing).
    Rto {
        conn: ConnId,
        node: NodeId,
    },
    /// A write on `node`'s disk lands and is answered (a paused node
    /// gets the answer on resume).
    FileDone {
        node: NodeId,
        incarnation: u32,
        token: u64,
        ino: u64,
        data: Vec<u8>,
    },
    /// An input from the stream medium for one process of `node`: parked
    /// like a delivery by a held link or a paused node.
    Stream {
        node: NodeId,
        peer: NodeId,
        incarnation: u32,
        input: Input<M>,
    },
    /// A spawned child has loaded: it gets `Input::Start`, then what
    /// waited on its pipe.
    Ready {
        node: NodeId,
        incarnation: u32,
    },
}

/// The most processes a run may have, scenario nodes and spawned children
/// together: a machine that spawns in a loop ends the run with
/// [`LimitError::Processes`].
pub const MAX_PROCESSES: usize = 100_000;

/// A pipe between a parent and the child it spawned (`Outbox::spawn`):
/// which incarnation of each end holds it, while it does.
#[derive(Clone, Copy, Debug)]
struct Pipe {
    parent: NodeId,
    child: NodeId,
    /// `Some(incarnation)` while that end's process runs.
    parent_up: Option<u32>,
    child_up: Option<u32>,
}

impl Pipe {
    /// From `n`'s side: its end, the other process, the other end.
    fn ends(&mut self, n: NodeId) -> (&mut Option<u32>, NodeId, Option<u32>) {
        if self.parent == n {
            (&mut self.parent_up, self.child, self.child_up)
        } else {
            (&mut self.child_up, self.parent, self.parent_up)
        }
    }
}

/// A held or stalled link's parked traffic.
struct Held<M> {
    stall: bool,
    /// Deliveries that reached the link's end, in arrival order.
    parked: Vec<Event<M>>,
    /// Blocking writes waiting for the stall to end: `(incarnation, to, token)`.
    writes: Vec<(u32, Dest, u64)>,
}

impl<Msg> Held<Msg> {
    /// Bytes of stream data parked at the link's end: read by no one yet.
    fn unread_bytes<M: Machine<Msg = Msg>>(&self) -> u64 {
        self.parked
            .iter()
            .map(|e| match e {
                Event::Stream {
                    input: Input::Data { msg, .. },
                    ..
                } => wire_len::<M>(msg),
                _ => 0,
            })
            .sum()
    }
}

/// A message's size on a stream: its description, one line with `\r\n`.
fn wire_len<M: Machine>(msg: &M::Msg) -> u64 {
    M::describe(msg).len() as u64 + 2
}

struct Queued<M> {
    t: Timestamp,
    seq: u64,
    event: Event<M>,
}

impl<M> PartialEq for Queued<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl<M> Eq for Queued<M> {}
impl<M> PartialOrd for Queued<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for Queued<M> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(other.t, other.seq))
    }
}

/// A node's one pending timer: when (global time), which generation (older
/// queued timer events are stale), and the machine's reason, for the trace.
#[derive(Clone, Copy)]
struct Armed {
    at: Timestamp,
    generation: u64,
    reason: &'static str,
}

struct Node<M: Machine> {
    machine: Option<M>,
    /// Bumped whenever the machine is replaced or removed; messages carry
    /// the incarnation they were sent to, so a crash drops what was in flight.
    incarnation: u32,
    clock: Clock,
    timer: Option<Armed>,
    timer_generation: u64,
    /// `Some` while paused: what arrived meanwhile, replayed on resume.
    paused: Option<Vec<Event<M::Msg>>>,
    /// The host is up (started and not crashed), whether or not the
    /// process runs: it answers packets for unknown connections with RST.
    host_up: bool,
    /// The running process listens for connections.
    listening: bool,
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub peak_queue: usize,
    pub sends: u64,
}

thread_local! {
    static SIM_NOW: Cell<Option<Timestamp>> = const { Cell::new(None) };
}

/// The simulated time of the event being processed on this thread, for log
/// formatters (`tracing` output lines up with the trace).
pub fn current_time() -> Option<Timestamp> {
    SIM_NOW.with(Cell::get)
}

pub struct Engine<M: Machine, F: FnMut(NodeId) -> M> {
    factory: F,
    nodes: Vec<Node<M>>,
    net: Network,
    faults: Vec<Fault>,
    queue: BinaryHeap<Reverse<Queued<M::Msg>>>,
    held: BTreeMap<(NodeId, NodeId), Held<M::Msg>>,
    seq: u64,
    now: Timestamp,
    limits: Limits,
    trace: Trace,
    stats: Stats,
    outbox: Outbox<M::Msg>,
    streams: Streams<M::Msg>,
    /// Armed retransmission timers, `(at, seq, conn, node)`: ordered with
    /// the queue by `(time, seq)`, and cancellable, since nearly every one
    /// is cancelled by its ACK.
    rto_queue: BTreeSet<(Timestamp, u64, ConnId, NodeId)>,
    /// Each endpoint's armed timer, `(at, seq)`, to find it in `rto_queue`.
    rto_armed: BTreeMap<(ConnId, NodeId), (Timestamp, u64)>,
    /// The node whose machine answered `Input::Stop` with
    /// [`Outbox::linger`], while a stop fault is carried out.
    lingering: Option<NodeId>,
    /// Inputs still to hand to the node being dispatched (kept between
    /// dispatches so that an event allocates nothing for them).
    pending: VecDeque<Input<M::Msg>>,
    /// The filesystem medium: each host's disk.
    disks: Disks,
    /// The pipe medium: every pipe a spawn made, by its connection id.
    pipes: BTreeMap<ConnId, Pipe>,
    /// Set when a spawn passed [`MAX_PROCESSES`]; the run ends with it.
    process_limit: Option<Timestamp>,
}

/// How a node starts: its name, clock, and when (if ever) it first starts.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub clock: Clock,
    pub start_at: Option<Timestamp>,
}

impl<M: Machine, F: FnMut(NodeId) -> M> Engine<M, F> {
    pub fn new(
        nodes: Vec<NodeSpec>,
        net: Network,
        faults: Vec<(Timestamp, Fault)>,
        limits: Limits,
        keep: Level,
        factory: F,
    ) -> Self {
        let names = nodes.iter().map(|n| n.name.clone()).collect();
        let mut engine = Engine {
            factory,
            nodes: nodes
                .iter()
                .map(|spec| Node {
                    machine: None,
                    incarnation: 0,
                    clock: spec.clock,
                    timer: None,
                    timer_generation: 0,
                    paused: None,
                    host_up: false,
                    listening: false,
                })
                .collect(),
            net,
            faults: Vec::new(),
            queue: BinaryHeap::new(),
            held: BTreeMap::new(),
            seq: 0,
            now: Timestamp::ZERO,
            limits,
            trace: Trace::new(names, keep),
            stats: Stats::default(),
            outbox: Outbox::new(NodeId(0)),
            streams: Streams::new(TcpConfig::default()),
            rto_queue: BTreeSet::new(),
            rto_armed: BTreeMap::new(),
            lingering: None,
            pending: VecDeque::new(),
            disks: Disks::default(),
            pipes: BTreeMap::new(),
            process_limit: None,
        };
        // Node starts are faults like any other, queued first so that at
        // equal times a node starts before anything scheduled after it.
        for (i, spec) in nodes.iter().enumerate() {
            if let Some(at) = spec.start_at {
                engine.schedule_fault(at, Fault::Start(NodeId(i)));
            }
        }
        for (at, fault) in faults {
            engine.schedule_fault(at, fault);
        }
        engine
    }

    /// The stream medium's TCP constants (Linux's defaults otherwise).
    pub fn with_tcp(mut self, config: TcpConfig) -> Self {
        self.streams.config = config;
        self
    }

    /// The hosts and their disks (`sim/src/fs.rs`); without them every
    /// file operation fails with `EIO`.
    pub fn with_disks(mut self, disks: Disks) -> Self {
        self.disks = disks;
        self
    }

    /// The disks, as the run left them (tests).
    pub fn disks(&self) -> &Disks {
        &self.disks
    }

    fn schedule_fault(&mut self, at: Timestamp, fault: Fault) {
        self.faults.push(fault);
        let idx = self.faults.len() - 1;
        self.push(at, Event::Fault(idx));
    }

    fn push(&mut self, t: Timestamp, event: Event<M::Msg>) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            t,
            seq: self.seq,
            event,
        }));
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }
    pub fn into_trace(self) -> Trace {
        self.trace
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn now(&self) -> Timestamp {
        self.now
    }
    pub fn machine(&self, node: NodeId) -> Option<&M> {
        self.nodes[node.0].machine.as_ref()
    }

    /// Run until the queue is empty or the next event is past `limits.end`.
    pub fn run(&mut self) -> Result<(), LimitError> {
        let result = self.drive();
        SIM_NOW.with(|c| c.set(None));
        result
    }

    /// The next event: the earliest by `(time, seq)` of the queue's head
    /// and the earliest retransmission timer.
    fn pop_next(&mut self) -> Option<(Timestamp, Event<M::Msg>)> {
        let queued = self.queue.peek().map(|Reverse(q)| (q.t, q.seq));
        let rto = self.rto_queue.first().map(|&(t, seq, ..)| (t, seq));
        let next = match (queued, rto) {
            (None, None) => return None,
            (Some(q), Some(r)) if r < q => r,
            (None, Some(r)) => r,
            (Some(q), _) => q,
        };
        if next.0 > self.limits.end {
            return None;
        }
        if rto == Some(next) {
            let (t, _, conn, node) = self.rto_queue.pop_first()?;
            self.rto_armed.remove(&(conn, node));
            return Some((t, Event::Rto { conn, node }));
        }
        let Reverse(Queued { t, event, .. }) = self.queue.pop()?;
        Some((t, event))
    }

    fn drive(&mut self) -> Result<(), LimitError> {
        while let Some((t, event)) = self.pop_next() {
            self.now = t;
            SIM_NOW.with(|c| c.set(Some(t)));
            self.stats.events += 1;
            if self.stats.events > self.limits.max_events {
                return Err(LimitError::Events {
                    limit: self.limits.max_events,
                    at: t,
                });
            }
            self.step(event);
            if let Some(at) = self.process_limit {
                return Err(LimitError::Processes {
                    limit: MAX_PROCESSES,
                    at,
                });
            }
            let len = self.queue.len() + self.rto_queue.len();
            self.stats.peak_queue = self.stats.peak_queue.max(len);
            if len > self.limits.max_queue {
                return Err(LimitError::Queue {
                    limit: self.limits.max_queue,
                    at: t,
                });
            }
        }
        self.now = self.now.max(self.limits.end);
        Ok(())
    }

    fn step(&mut self, event: Event<M::Msg>) {
        // A held link keeps what reaches its end; a paused node keeps what
        // reaches it. Both hand the events back unchanged later.
        let link = match &event {
            Event::Deliver { from, to, .. } => Some((*from, *to)),
            Event::Stream {
                node,
                peer,
                input: Input::Data { .. } | Input::Closed { .. },
                ..
            } => Some((*peer, *node)),
            _ => None,
        };
        if let Some(held) = link.and_then(|l| self.held.get_mut(&l)) {
            held.parked.push(event);
            return;
        }
        let target = match &event {
            Event::Deliver { to, .. } => Some(*to),
            Event::WriteDone { node, .. }
            | Event::Stream { node, .. }
            | Event::FileDone { node, .. } => Some(*node),
            Event::Timer { .. }
            | Event::Fault(_)
            | Event::Packet { .. }
            | Event::Rto { .. }
            | Event::Ready { .. } => None,
        };
        if let Some(n) = target {
            if let Some(parked) = &mut self.nodes[n.0].paused {
                parked.push(event);
                return;
            }
        }
        match event {
            Event::Deliver {
                from,
                to,
                incarnation,
                msg,
            } => {
                let node = &self.nodes[to.0];
                let reason = if node.machine.is_none() || node.incarnation != incarnation {
                    Some("node down")
                } else if self.net.blocked(from, to) {
                    Some("partition")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.net_record(kind::DROP, from, to, reason, &msg);
                    return;
                }
                if self.trace.wants(Level::Net) {
                    self.trace.push(Record::net(
                        self.now,
                        to,
                        kind::DELIVER,
                        Some(from),
                        None,
                        Some(M::describe(&msg)),
                    ));
                }
                self.dispatch(to, Input::Recv { from, msg });
            }
            Event::Timer { node, generation } => {
                let n = &mut self.nodes[node.0];
                let Some(armed) = n.timer.filter(|a| a.generation == generation) else {
                    return; // re-armed or disarmed since
                };
                n.timer = None;
                // Paused: the timer is re-armed on resume, and fires then if
                // it came due.
                if n.paused.is_none() {
                    if self.trace.wants(Level::Net) {
                        self.trace.push(Record::net(
                            self.now,
                            node,
                            kind::TIMER,
                            None,
                            Some(Cow::Borrowed(armed.reason)),
                            None,
                        ));
                    }
                    self.dispatch(node, Input::Timeout);
                }
            }
            Event::WriteDone {
                node,
                incarnation,
                to,
                token,
            } => {
                if self.nodes[node.0].incarnation == incarnation {
                    self.dispatch(
                        node,
                        Input::SendDone {
                            to,
                            token,
                            result: Ok(()),
                        },
                    );
                }
            }
            Event::Fault(idx) => {
                let fault = self.faults[idx].clone();
                self.apply(fault);
            }
            Event::FileDone {
                node,
                incarnation,
                token,
                ino,
                data,
            } => {
                let n = &self.nodes[node.0];
                // A process gone before its write completed wrote nothing.
                if n.incarnation != incarnation || n.machine.is_none() {
                    return;
                }
                self.disks.land(self.now, node, ino, data);
                let done = FileDone {
                    token,
                    result: Ok(None),
                };
                if let Some(msg) = M::file_done(done) {
                    self.dispatch(node, Input::Recv { from: node, msg });
                }
            }
            Event::Packet { from, to, packet } => {
                let reason = if !self.host_up(to) {
                    Some("host down")
                } else if self.net.blocked(from, to) {
                    Some("partition")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return self.packet_record(kind::DROP, from, to, reason, &packet);
                }
                let node = &self.nodes[to.0];
                let listener =
                    (node.listening && node.machine.is_some()).then_some(node.incarnation);
                self.streams.on_packet(self.now, to, from, listener, packet);
                self.carry_out_stream_effects();
                // ACKs that no same-instant answer carried leave alone.
                self.streams.flush_acks(self.now);
                self.carry_out_stream_effects();
            }
            Event::Rto { conn, node } => {
                self.streams.on_timer(self.now, conn, node);
                self.carry_out_stream_effects();
            }
            Event::Stream {
                node,
                peer,
                incarnation,
                input,
            } => {
                if self.nodes[node.0].incarnation != incarnation
                    || self.nodes[node.0].machine.is_none()
                {
                    return;
                }
                if self.trace.wants(Level::Net) {
                    let (kind, msg) = match &input {
                        Input::Data { msg, .. } => (kind::DELIVER, Some(M::describe(msg))),
                        Input::Connected { .. } => (kind::CONNECTED, None),
                        Input::Accepted { .. } => (kind::ACCEPTED, None),
                        Input::Closed { .. } => (kind::EOF, None),
                        Input::ConnectFailed { error, .. } | Input::Reset { error, .. } => {
                            (kind::CONN_ERROR, Some(Cow::Owned(error.to_string())))
                        }
                        _ => (kind::DELIVER, None),
                    };
                    self.trace
                        .push(Record::net(self.now, node, kind, Some(peer), None, msg));
                }
                self.dispatch(node, input);
            }
            Event::Ready { node, incarnation } => {
                let n = &mut self.nodes[node.0];
                if n.incarnation != incarnation || n.machine.is_none() {
                    return;
                }
                let parked = n.paused.take().unwrap_or_default();
                if let Some(pipe) = self.pipes.values().find(|p| p.child == node) {
                    let record = self.pipe_record(*pipe, kind::READY, None);
                    self.trace.push(record);
                }
                self.dispatch(node, Input::Start);
                for event in parked {
                    self.step(event);
                }
                self.rearm(node);
            }
        }
    }

    /// A decision record of the pipe medium about `pipe`'s child, written
    /// as its parent's (spawned children have no scenario name to expect).
    fn pipe_record(&self, pipe: Pipe, kind: &'static str, reason: Option<&'static str>) -> Record {
        Record {
            t: self.now,
            node: Some(pipe.parent),
            kind,
            peer: None,
            reason: reason.map(Cow::Borrowed),
            msg: Some(Cow::Owned(self.trace.name(pipe.child).to_string())),
            level: Level::Decision,
        }
    }

    /// `Outbox::spawn`: a child process on `parent`'s host (its clock from
    /// now on), paused until it is ready.
    fn spawn(
        &mut self,
        parent: NodeId,
        conn: ConnId,
        name: String,
        spec: M::Msg,
        ready_after: Duration,
    ) {
        if self.nodes.len() >= MAX_PROCESSES {
            self.process_limit.get_or_insert(self.now);
            return;
        }
        let child = NodeId(self.nodes.len());
        self.trace.add_name(name);
        let clock = self.nodes[parent.0].clock;
        let machine = M::spawned(spec);
        let child_up = machine.is_some().then_some(1);
        self.nodes.push(Node {
            machine,
            incarnation: 1,
            clock,
            timer: None,
            timer_generation: 0,
            paused: Some(Vec::new()),
            host_up: true,
            listening: false,
        });
        let pipe = Pipe {
            parent,
            child,
            parent_up: Some(self.nodes[parent.0].incarnation),
            child_up,
        };
        self.pipes.insert(conn, pipe);
        let record = self.pipe_record(pipe, kind::SPAWN, None);
        self.trace.push(record);
        if child_up.is_some() {
            self.push(
                self.now + ready_after,
                Event::Ready {
                    node: child,
                    incarnation: 1,
                },
            );
        } else {
            self.child_gone(conn, "no machine");
        }
    }

    /// A pipe's child ended: its parent reads EOF at once.
    fn child_gone(&mut self, conn: ConnId, reason: &'static str) {
        let Some(pipe) = self.pipes.get_mut(&conn) else {
            return;
        };
        pipe.child_up = None;
        let pipe = *pipe;
        let record = self.pipe_record(pipe, kind::EXIT, Some(reason));
        self.trace.push(record);
        if let Some(incarnation) = pipe.parent_up {
            let input = Input::Closed {
                conn,
                peer: pipe.child,
            };
            self.pipe_input(pipe.parent, incarnation, input);
        }
    }

    /// Process `n` ended (`how`: why, for a spawned child's `exit`
    /// record): each pipe's other end reads EOF at once. On a host crash
    /// (`host_down`) its children die with it.
    fn pipes_gone(&mut self, n: NodeId, how: &'static str, host_down: bool) {
        let mine: Vec<(ConnId, Pipe)> = self
            .pipes
            .iter()
            .filter(|(_, p)| {
                (p.child == n && p.child_up.is_some()) || (p.parent == n && p.parent_up.is_some())
            })
            .map(|(c, p)| (*c, *p))
            .collect();
        for (conn, pipe) in mine {
            if pipe.child == n {
                self.child_gone(conn, how);
                continue;
            }
            if let Some(p) = self.pipes.get_mut(&conn) {
                p.parent_up = None;
            }
            if host_down {
                // Same host: the child dies with it, silently.
                if pipe.child_up.is_some() {
                    self.child_gone(conn, "host down");
                    self.take_down(pipe.child);
                }
            } else if let Some(incarnation) = pipe.child_up {
                self.pipe_input(pipe.child, incarnation, Input::Closed { conn, peer: n });
            }
        }
    }

    /// `close(conn)` on a pipe: this end is gone; the other reads EOF at
    /// once (after what was written before).
    fn pipe_close(&mut self, n: NodeId, conn: ConnId) {
        let Some(pipe) = self.pipes.get_mut(&conn) else {
            return;
        };
        let me = Some(self.nodes[n.0].incarnation);
        let (mine, peer, theirs) = pipe.ends(n);
        if *mine != me {
            return;
        }
        *mine = None;
        if let Some(incarnation) = theirs {
            self.pipe_input(peer, incarnation, Input::Closed { conn, peer: n });
        }
    }

    /// What the pipe hands `to`'s process `incarnation`, at this instant
    /// (after what was handed before).
    fn pipe_input(&mut self, to: NodeId, incarnation: u32, input: Input<M::Msg>) {
        let peer = match &input {
            Input::Data { peer, .. } | Input::Closed { peer, .. } => *peer,
            _ => to,
        };
        self.push(
            self.now,
            Event::Stream {
                node: to,
                peer,
                incarnation,
                input,
            },
        );
    }

    /// A write on a pipe: at the other end at this instant, after what
    /// was written before; `broken pipe` once that end is gone.
    fn pipe_write(
        &mut self,
        n: NodeId,
        conn: ConnId,
        mut pipe: Pipe,
        msg: M::Msg,
    ) -> (Option<NodeId>, Result<(), SendError>) {
        self.stats.sends += 1;
        let me = self.nodes[n.0].incarnation;
        let (mine, peer, theirs) = pipe.ends(n);
        match (*mine == Some(me), theirs) {
            (true, Some(incarnation)) => {
                self.net_record(kind::SEND, n, peer, "", &msg);
                self.pipe_input(peer, incarnation, Input::Data { conn, peer: n, msg });
                (Some(peer), Ok(()))
            }
            _ => {
                self.net_record(kind::SEND_FAILED, n, peer, "broken pipe", &msg);
                (Some(peer), Err(SendError::BrokenPipe))
            }
        }
    }

    /// Do what the stream layer asked: packets onto the network, inputs to
    /// machines (now, or parked), timers into the queue.
    fn carry_out_stream_effects(&mut self) {
        let mut effects = self.streams.take_effects();
        for effect in effects.drain(..) {
            match effect {
                Effect::Transmit {
                    from,
                    to,
                    packet,
                    retransmission,
                } => self.transmit_packet(from, to, packet, retransmission),
                Effect::Input {
                    node,
                    incarnation,
                    peer,
                    input,
                } => self.step(Event::Stream {
                    node,
                    peer,
                    incarnation,
                    input,
                }),
                Effect::Timer { conn, node, at } => {
                    if let Some((t, seq)) = self.rto_armed.remove(&(conn, node)) {
                        self.rto_queue.remove(&(t, seq, conn, node));
                    }
                    if let Some(at) = at {
                        self.seq += 1;
                        self.rto_armed.insert((conn, node), (at, self.seq));
                        self.rto_queue.insert((at, self.seq, conn, node));
                    }
                }
                Effect::Note {
                    node,
                    peer,
                    kind,
                    reason,
                } => {
                    if self.trace.wants(Level::Net) {
                        self.trace.push(Record::net(
                            self.now,
                            node,
                            kind,
                            Some(peer),
                            Some(Cow::Borrowed(reason)),
                            None,
                        ));
                    }
                }
            }
        }
        self.streams.return_effects(effects);
    }

    fn transmit_packet(
        &mut self,
        from: NodeId,
        to: NodeId,
        packet: Packet<M::Msg>,
        retransmission: Option<u32>,
    ) {
        if let Some(n) = retransmission {
            if self.trace.wants(Level::Net) {
                let reason = format!("{} #{n}", packet.label());
                self.trace.push(Record::net(
                    self.now,
                    from,
                    kind::RETRANSMIT,
                    Some(to),
                    Some(Cow::Owned(reason)),
                    packet.msg().map(M::describe),
                ));
            }
        }
        let names = &self.trace;
        match self.net.route(from, to, |id| names.name(id).to_string()) {
            Fate::Lost => self.packet_record(kind::DROP, from, to, "loss", &packet),
            Fate::Partitioned => self.packet_record(kind::DROP, from, to, "partition", &packet),
            Fate::Deliver { delay, duplicate } => {
                // A duplicated packet is discarded by the receiver's
                // sequence check, as TCP does.
                if let Some(again) = duplicate {
                    self.push(
                        self.now + again,
                        Event::Packet {
                            from,
                            to,
                            packet: packet.clone(),
                        },
                    );
                }
                self.push(self.now + delay, Event::Packet { from, to, packet });
            }
        }
    }

    /// A net-level record of a lost packet, with its kind.
    fn packet_record(
        &mut self,
        kind: &'static str,
        from: NodeId,
        to: NodeId,
        reason: &'static str,
        packet: &Packet<M::Msg>,
    ) {
        if self.trace.wants(Level::Net) {
            self.trace.push(Record::net(
                self.now,
                from,
                kind,
                Some(to),
                Some(Cow::Owned(format!("{reason} ({})", packet.label()))),
                packet.msg().map(M::describe),
            ));
        }
    }

    fn apply(&mut self, fault: Fault) {
        let record = fault_record(&fault, self.now, &self.trace);
        self.trace.push(record);
        match fault {
            Fault::Start(n) => {
                // One process per node: one still running (a stopped one
                // that lingers) ends first, its connections and pipes
                // closed as a kill closes them.
                if self.nodes[n.0].machine.is_some() {
                    self.end_process(n);
                }
                self.boot(n);
            }
            Fault::Restart(n) => {
                // Whatever died comes back: after a crash the host, after a
                // kill or stop the process. A running node is rebooted.
                if self.nodes[n.0].machine.is_some() {
                    self.crash(n);
                }
                self.boot(n);
            }
            Fault::Stop(n) => {
                // A machine that answers with `Outbox::linger` runs on
                // until it exits.
                self.lingering = None;
                self.dispatch(n, Input::Stop);
                if self.lingering.take() != Some(n) {
                    self.end_process(n);
                }
            }
            Fault::Kill(n) => self.end_process(n),
            Fault::Crash(n) => self.crash(n),
            Fault::Partition(rules) => self.net.partition(rules),
            Fault::Heal => self.net.heal(),
            Fault::ClockJump { node, by_us } => self.nodes[node.0].clock.jump(by_us),
            Fault::Link { from, to, config } => self.net.set_link(from, to, config),
            Fault::Break { from, to } => self.net.break_link(from, to),
            Fault::Repair { from, to } => self.net.repair_link(from, to),
            Fault::Hold { from, to } | Fault::Stall { from, to } => {
                let stall = matches!(fault, Fault::Stall { .. });
                let held = self.held.entry((from, to)).or_insert(Held {
                    stall,
                    parked: Vec::new(),
                    writes: Vec::new(),
                });
                held.stall |= stall;
            }
            Fault::Release { from, to } => {
                // Handed over at once, ahead of anything else due now.
                if let Some(held) = self.held.remove(&(from, to)) {
                    for event in held.parked {
                        self.step(event);
                    }
                    for (incarnation, to, token) in held.writes {
                        self.step(Event::WriteDone {
                            node: from,
                            incarnation,
                            to,
                            token,
                        });
                    }
                }
            }
            Fault::Pause(n) => {
                self.nodes[n.0].paused.get_or_insert_with(Vec::new);
            }
            Fault::Resume(n) => {
                let node = &mut self.nodes[n.0];
                let parked = node.paused.take().unwrap_or_default();
                // Re-arm from scratch: a deadline that passed while paused
                // fires now, after the messages queued below.
                node.timer = None;
                for event in parked {
                    self.step(event);
                }
                self.rearm(n);
            }
            Fault::PowerLoss { host } => {
                let nodes: Vec<NodeId> = self.disks.nodes_on(host.index).collect();
                for n in nodes {
                    self.crash(n);
                }
                self.disks.power_loss(self.now, host.index);
            }
            Fault::DiskError { host, path, errno } => {
                self.disks.set_error(host.index, path, errno);
            }
            Fault::SlowDisk { host, write_us } => {
                self.disks
                    .set_write_time(host.index, crate::Duration::from_us(write_us));
            }
            Fault::TornWrite { host, path } => self.disks.tear_next_write(host.index, path),
            Fault::KillBeforeRename(n) => self.disks.kill_before_next_rename(n),
            Fault::ClockDrift { node, ppm } => {
                // Validated when the scenario was read.
                let changed = self.nodes[node.0].clock.set_drift(self.now, ppm);
                debug_assert!(changed, "drift {ppm} out of range");
                // The node's deadline is on its own clock: where it falls in
                // global time has moved.
                self.rearm(node);
            }
        }
    }

    fn boot(&mut self, n: NodeId) {
        let machine = (self.factory)(n);
        let node = &mut self.nodes[n.0];
        node.machine = Some(machine);
        node.incarnation += 1;
        node.timer = None;
        node.host_up = true;
        node.listening = false;
        self.dispatch(n, Input::Start);
    }

    fn take_down(&mut self, n: NodeId) {
        let node = &mut self.nodes[n.0];
        node.machine = None;
        node.incarnation += 1;
        node.timer = None;
        node.listening = false;
        // A crash kills a paused process too; what it had queued is lost.
        node.paused = None;
    }

    /// Whether `n`'s host is up: its own (started, not crashed), or, for
    /// processes that share a `[[host]]`, any of theirs. A process not
    /// started yet on a host that runs others is refused (RST), as a
    /// connect to a port or UNIX socket nobody serves is.
    fn host_up(&self, n: NodeId) -> bool {
        self.nodes[n.0].host_up
            || self
                .disks
                .host(n)
                .is_some_and(|h| self.disks.nodes_on(h).any(|m| self.nodes[m.0].host_up))
    }

    /// The process ends, its host stays up: its kernel closes its
    /// connections (FIN after what was written) and refuses new ones. A
    /// connection with data the process never read (parked by a stall, or
    /// by a pause) is reset instead: Linux `__tcp_close` "Unread data was
    /// tossed", `tcp_send_active_reset` (RFC 2525 2.17). The peer's writes
    /// blocked on it are dropped: its machine learns of the reset.
    fn end_process(&mut self, n: NodeId) {
        self.end_process_as(n, "killed");
    }

    /// [`Self::end_process`], with why for a spawned child's `exit` record.
    fn end_process_as(&mut self, n: NodeId, how: &'static str) {
        if self.nodes[n.0].machine.is_some() {
            let owner = self.nodes[n.0].incarnation;
            let unread = self.unread_conns(n);
            for &conn in &unread {
                self.streams.reset(self.now, conn, n, owner);
            }
            for ((_, to), held) in self.held.iter_mut() {
                if *to == n {
                    held.writes.retain(
                        |(_, dest, _)| !matches!(dest, Dest::Conn(c) if unread.contains(c)),
                    );
                }
            }
            self.streams.process_gone(self.now, n, owner);
            self.pipes_gone(n, how, false);
        }
        self.take_down(n);
        self.carry_out_stream_effects();
    }

    /// `n`'s connections with stream data parked unread: on a stalled link
    /// into it, or while it is paused.
    fn unread_conns(&self, n: NodeId) -> BTreeSet<ConnId> {
        let stalled = self
            .held
            .iter()
            .filter(|((_, to), h)| *to == n && h.stall)
            .flat_map(|(_, h)| h.parked.iter());
        let paused = self.nodes[n.0].paused.iter().flatten();
        stalled
            .chain(paused)
            .filter_map(|e| match e {
                Event::Stream {
                    node,
                    input: Input::Data { conn, .. },
                    ..
                } if *node == n => Some(*conn),
                _ => None,
            })
            .collect()
    }

    /// The host dies: the process with it, and every connection, silently.
    fn crash(&mut self, n: NodeId) {
        if self.nodes[n.0].machine.is_some() {
            self.pipes_gone(n, "host down", true);
        }
        self.take_down(n);
        self.nodes[n.0].host_up = false;
        self.streams.host_down(n);
    }

    fn net_record(
        &mut self,
        kind: &'static str,
        from: NodeId,
        to: NodeId,
        reason: &'static str,
        msg: &M::Msg,
    ) {
        if self.trace.wants(Level::Net) {
            self.trace.push(Record::net(
                self.now,
                from,
                kind,
                Some(to),
                (!reason.is_empty()).then_some(Cow::Borrowed(reason)),
                Some(M::describe(msg)),
            ));
        }
    }

    /// Hand `input` to node `n`, then carry out its outputs. Awaited sends
    /// are answered at once and before anything else reaches the node.
    fn dispatch(&mut self, n: NodeId, input: Input<M::Msg>) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.push_back(input);
        let mut out = std::mem::replace(&mut self.outbox, Outbox::new(n));
        out.node = n;
        // A `kill-before-rename` fired: the process dies, nothing after
        // the rename happens.
        let mut killed = false;
        // The process ended itself (`Outbox::exit`): nothing after it.
        let mut exited = false;
        while let Some(input) = pending.pop_front() {
            if killed || exited {
                break;
            }
            let node = &mut self.nodes[n.0];
            let Some(machine) = node.machine.as_mut() else {
                break;
            };
            let now = node.clock.now(self.now);
            tracing::trace!(
                node = self.trace.name(n),
                input = input_kind(&input),
                "dispatch"
            );
            machine.handle(now, input, &mut out);
            for item in out.items.drain(..) {
                if killed || exited {
                    continue;
                }
                match item {
                    Output::Spawn {
                        conn,
                        name,
                        spec,
                        ready_after,
                    } => self.spawn(n, conn, name, spec, ready_after),
                    Output::Terminate(conn) => {
                        let child = self
                            .pipes
                            .get(&conn)
                            .filter(|p| p.parent == n && p.child_up.is_some())
                            .map(|p| p.child);
                        if let Some(child) = child {
                            self.end_process_as(child, "terminated");
                        }
                    }
                    Output::Exit => exited = true,
                    Output::Linger => self.lingering = Some(n),
                    Output::File { op, token } => {
                        killed = self.file(n, op, token, &mut pending);
                    }
                    Output::Record(mut r) => {
                        r.t = self.now;
                        tracing::debug!(
                            node = self.trace.name(n),
                            kind = r.kind,
                            peer = r.peer.map(|p| self.trace.name(p)),
                            reason = r.reason.as_deref(),
                            "decision"
                        );
                        self.trace.push(r);
                    }
                    Output::Listen => self.nodes[n.0].listening = true,
                    Output::Connect { conn, to } => {
                        let owner = self.nodes[n.0].incarnation;
                        if self.trace.wants(Level::Net) {
                            self.trace.push(Record::net(
                                self.now,
                                n,
                                kind::CONNECT,
                                Some(to),
                                None,
                                Some(Cow::Owned(conn.to_string())),
                            ));
                        }
                        self.streams.connect(self.now, conn, n, owner, to);
                        self.carry_out_stream_effects();
                    }
                    Output::Close(conn) if self.pipes.contains_key(&conn) => {
                        self.pipe_close(n, conn);
                    }
                    Output::Close(conn) => {
                        let owner = self.nodes[n.0].incarnation;
                        self.streams.close(self.now, conn, n, owner);
                        self.carry_out_stream_effects();
                    }
                    Output::Reset(conn) => {
                        let owner = self.nodes[n.0].incarnation;
                        self.streams.reset(self.now, conn, n, owner);
                        self.carry_out_stream_effects();
                    }
                    Output::Send { to, msg, wait } => {
                        // A blocking write on a stalled connection waits
                        // only once the unread bytes pass the buffers.
                        let fits = match (to, wait) {
                            (Dest::Conn(conn), Wait::Write(_)) => self
                                .streams
                                .peer(conn, n)
                                .and_then(|p| self.held.get(&(n, p)))
                                .filter(|h| h.stall)
                                .map(|h| {
                                    h.unread_bytes::<M>() + wire_len::<M>(&msg)
                                        <= self.streams.config.unread_limit
                                }),
                            _ => None,
                        };
                        let (peer, result) = match to {
                            Dest::Node(to) => (Some(to), self.transmit(n, to, msg)),
                            Dest::Conn(conn) => self.write(n, conn, msg),
                        };
                        // A write that found its connection reset (`break`):
                        // the process's reads fail too, after the write's own
                        // outcome.
                        let reset = match (to, peer, result) {
                            (Dest::Conn(conn), Some(peer), Err(SendError::ConnectionReset)) => {
                                Some(Input::Reset {
                                    conn,
                                    peer,
                                    error: ConnError::Reset,
                                })
                            }
                            _ => None,
                        };
                        let token = match wait {
                            Wait::No => None,
                            Wait::Write(token) if result.is_ok() => {
                                let held = peer.and_then(|p| self.held.get_mut(&(n, p)));
                                match held.filter(|h| h.stall && fits != Some(true)) {
                                    Some(held) => {
                                        let incarnation = self.nodes[n.0].incarnation;
                                        held.writes.push((incarnation, to, token));
                                        None
                                    }
                                    None => Some(token),
                                }
                            }
                            Wait::Write(token) | Wait::Try(token) => Some(token),
                        };
                        if let Some(token) = token {
                            pending.push_back(Input::SendDone { to, token, result });
                        }
                        pending.extend(reset);
                    }
                }
            }
        }
        self.outbox = out;
        pending.clear(); // left over if the machine went away meanwhile
        self.pending = pending;
        if killed {
            self.trace.push(Record {
                t: self.now,
                node: Some(n),
                kind: kind::KILL,
                peer: None,
                reason: None,
                msg: Some(Cow::Borrowed("before rename")),
                level: Level::Decision,
            });
            self.end_process(n);
        }
        if exited {
            self.end_process_as(n, "exited");
        }
        self.rearm(n);
    }

    /// Carry out a file operation of `n`'s; true if it killed the process.
    fn file(
        &mut self,
        n: NodeId,
        op: FileOp,
        token: u64,
        pending: &mut VecDeque<Input<M::Msg>>,
    ) -> bool {
        let described = self.trace.wants(Level::Net).then(|| op.clone());
        let outcome = self.disks.apply(self.now, n, op);
        if let Some(op) = described {
            let (reason, msg) = fs::describe(&op, &outcome);
            self.trace.push(Record::net(
                self.now,
                n,
                kind::FILE,
                None,
                Some(Cow::Owned(reason)),
                Some(Cow::Owned(msg)),
            ));
        }
        match outcome {
            fs::Outcome::Kill => return true,
            fs::Outcome::Done(result) => {
                if let Some(msg) = M::file_done(FileDone { token, result }) {
                    pending.push_back(Input::Recv { from: n, msg });
                }
            }
            fs::Outcome::Later { after, ino, data } => {
                let incarnation = self.nodes[n.0].incarnation;
                self.push(
                    self.now + after,
                    Event::FileDone {
                        node: n,
                        incarnation,
                        token,
                        ino,
                        data,
                    },
                );
            }
        }
        false
    }

    /// A write on a connection: handed to the stream (which sends it now,
    /// or once the connection is established), or refused. Returns the
    /// peer, if the connection is still there, and the outcome.
    fn write(
        &mut self,
        n: NodeId,
        conn: ConnId,
        msg: M::Msg,
    ) -> (Option<NodeId>, Result<(), SendError>) {
        if let Some(pipe) = self.pipes.get(&conn).copied() {
            return self.pipe_write(n, conn, pipe, msg);
        }
        self.stats.sends += 1;
        let owner = self.nodes[n.0].incarnation;
        let peer = self.streams.peer(conn, n);
        if let Some(peer) = peer.filter(|p| self.net.is_broken(n, *p)) {
            // The `break` fault: the write fails and the connection is
            // gone.
            self.net_record(kind::SEND_FAILED, n, peer, "connection reset", &msg);
            self.streams.drop_endpoint(conn, n);
            return (Some(peer), Err(SendError::ConnectionReset));
        }
        let described = self.trace.wants(Level::Net).then(|| M::describe(&msg));
        let result = self.streams.write(self.now, conn, n, owner, msg);
        let (kind, reason) = match result {
            Ok(_) => (kind::SEND, None),
            Err(_) => (kind::SEND_FAILED, Some(Cow::Borrowed("broken pipe"))),
        };
        if let Some(msg) = described {
            self.trace
                .push(Record::net(self.now, n, kind, peer, reason, Some(msg)));
        }
        self.carry_out_stream_effects();
        (peer, result.map(|_| ()).map_err(|_| SendError::BrokenPipe))
    }

    fn transmit(&mut self, from: NodeId, to: NodeId, msg: M::Msg) -> Result<(), SendError> {
        self.stats.sends += 1;
        if self.net.is_broken(from, to) {
            self.net_record(kind::SEND_FAILED, from, to, "connection reset", &msg);
            return Err(SendError::ConnectionReset);
        }
        let names = &self.trace;
        match self.net.route(from, to, |id| names.name(id).to_string()) {
            Fate::Lost => self.net_record(kind::DROP, from, to, "loss", &msg),
            Fate::Partitioned => self.net_record(kind::DROP, from, to, "partition", &msg),
            Fate::Deliver { delay, duplicate } => {
                self.net_record(kind::SEND, from, to, "", &msg);
                let incarnation = self.nodes[to.0].incarnation;
                let deliver = |msg| Event::Deliver {
                    from,
                    to,
                    incarnation,
                    msg,
                };
                // The message itself goes to the last delivery: a copy only
                // when the network duplicates it.
                match duplicate {
                    None => self.push(self.now + delay, deliver(msg)),
                    Some(again) => {
                        self.push(self.now + delay, deliver(msg.clone()));
                        self.net_record(kind::DUPLICATE, from, to, "", &msg);
                        self.push(self.now + again, deliver(msg));
                    }
                }
            }
        }
        Ok(())
    }

    fn rearm(&mut self, n: NodeId) {
        let node = &mut self.nodes[n.0];
        let want = node
            .machine
            .as_ref()
            .and_then(Machine::poll_timeout)
            .map(|d| (node.clock.global_at(d.at).max(self.now), d.reason));
        match (want, &mut node.timer) {
            (Some((at, reason)), Some(armed)) if armed.at == at => {
                armed.reason = reason;
            }
            (None, None) => {}
            (want, timer) => {
                node.timer_generation += 1;
                let generation = node.timer_generation;
                *timer = want.map(|(at, reason)| Armed {
                    at,
                    generation,
                    reason,
                });
                if let Some((at, _)) = want {
                    self.push(
                        at,
                        Event::Timer {
                            node: n,
                            generation,
                        },
                    );
                }
            }
        }
    }
}

/// The trace record of `fault` applied at `t`. Every engine writes faults
/// the same way, so their decision traces compare.
pub fn fault_record(fault: &Fault, t: Timestamp, names: &Trace) -> Record {
    let (node, kind, msg) = describe_fault(fault, names);
    Record {
        t,
        node,
        kind,
        peer: None,
        reason: None,
        msg: msg.map(Cow::Owned),
        level: Level::Decision,
    }
}

/// A fault's node, record kind and text.
fn describe_fault(fault: &Fault, names: &Trace) -> (Option<NodeId>, &'static str, Option<String>) {
    let link = |from: &NodeId, to: &NodeId| format!("{}->{}", names.name(*from), names.name(*to));
    let group = |set: &std::collections::BTreeSet<NodeId>| {
        set.iter()
            .map(|n| names.name(*n))
            .collect::<Vec<_>>()
            .join(",")
    };
    match fault {
        Fault::Start(n) => (Some(*n), kind::START, None),
        Fault::Restart(n) => (Some(*n), kind::RESTART, None),
        Fault::Stop(n) => (Some(*n), kind::STOP, None),
        Fault::Crash(n) => (Some(*n), kind::CRASH, None),
        Fault::Kill(n) => (Some(*n), kind::KILL, None),
        Fault::Pause(n) => (Some(*n), kind::PAUSE, None),
        Fault::Resume(n) => (Some(*n), kind::RESUME, None),
        Fault::Partition(rules) => {
            let msg = rules
                .iter()
                .map(|p| format!("{}->{}", group(&p.from), group(&p.to)))
                .collect::<Vec<_>>()
                .join(" ");
            (None, kind::PARTITION, Some(msg))
        }
        Fault::Heal => (None, kind::HEAL, None),
        Fault::ClockJump { node, by_us } => {
            let sign = if *by_us < 0 { '-' } else { '+' };
            let size = crate::Duration::from_us(by_us.unsigned_abs());
            (Some(*node), kind::CLOCK_JUMP, Some(format!("{sign}{size}")))
        }
        Fault::Link { from, to, config } => {
            let msg = format!(
                "{} latency={:?} drop={} duplicate={}",
                link(from, to),
                config.latency,
                config.drop,
                config.duplicate
            );
            (None, kind::LINK, Some(msg))
        }
        Fault::Break { from, to } => (None, kind::BREAK, Some(link(from, to))),
        Fault::Repair { from, to } => (None, kind::REPAIR, Some(link(from, to))),
        Fault::Hold { from, to } => (None, kind::HOLD, Some(link(from, to))),
        Fault::Stall { from, to } => (None, kind::STALL, Some(link(from, to))),
        Fault::Release { from, to } => (None, kind::RELEASE, Some(link(from, to))),
        Fault::ClockDrift { node, ppm } => {
            (Some(*node), kind::CLOCK_DRIFT, Some(format!("{ppm}ppm")))
        }
        Fault::PowerLoss { host } => (None, kind::POWER_LOSS, Some(host.name.clone())),
        Fault::DiskError { host, path, errno } => {
            let at = path.as_deref().unwrap_or("*");
            let msg = match errno {
                Some(e) => format!("{} {at} {e}", host.name),
                None => format!("{} {at} ok", host.name),
            };
            (None, kind::DISK_ERROR, Some(msg))
        }
        Fault::SlowDisk { host, write_us } => {
            let d = crate::Duration::from_us(*write_us);
            (None, kind::SLOW_DISK, Some(format!("{} {d}", host.name)))
        }
        Fault::TornWrite { host, path } => {
            let at = path.as_deref().unwrap_or("*");
            (None, kind::TORN_WRITE, Some(format!("{} {at}", host.name)))
        }
        Fault::KillBeforeRename(n) => (Some(*n), kind::KILL_BEFORE_RENAME, None),
    }
}

fn input_kind<M>(input: &Input<M>) -> &'static str {
    match input {
        Input::Start => "start",
        Input::Stop => "stop",
        Input::Timeout => "timeout",
        Input::Recv { .. } => "recv",
        Input::SendDone { .. } => "send-done",
        Input::Connected { .. } => "connected",
        Input::ConnectFailed { .. } => "connect-failed",
        Input::Accepted { .. } => "accepted",
        Input::Data { .. } => "data",
        Input::Closed { .. } => "closed",
        Input::Reset { .. } => "reset",
    }
}

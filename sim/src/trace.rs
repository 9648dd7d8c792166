//! The run's trace: typed records stamped with simulated time.
//!
//! Two renderings are public interfaces (see `docs/trace-format.md`):
//! jsonl, one object per record, and aligned text. Records come in two levels:
//! [`Level::Net`] (every send, delivery, drop and duplicate) and
//! [`Level::Decision`] (faults, lifecycle, and every decision a model
//! records). Snapshots and expectations read decisions only.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

use serde::Serialize;

use crate::time::Timestamp;
use crate::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Decision,
    Net,
}

/// Record kinds the engine itself writes. Models add their own.
pub mod kind {
    pub const SEND: &str = "send";
    pub const DELIVER: &str = "deliver";
    pub const DROP: &str = "drop";
    pub const DUPLICATE: &str = "duplicate";
    /// A node's timer fired; reason: the machine's `Deadline::reason`.
    pub const TIMER: &str = "timer";
    pub const SEND_FAILED: &str = "send-failed";
    pub const START: &str = "start";
    pub const STOP: &str = "stop";
    pub const CRASH: &str = "crash";
    pub const RESTART: &str = "restart";
    pub const PARTITION: &str = "partition";
    pub const HEAL: &str = "heal";
    pub const CLOCK_JUMP: &str = "clock-jump";
    pub const LINK: &str = "link";
    pub const BREAK: &str = "break";
    pub const REPAIR: &str = "repair";
    pub const HOLD: &str = "hold";
    pub const STALL: &str = "stall";
    pub const RELEASE: &str = "release";
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    pub const CLOCK_DRIFT: &str = "clock-drift";
    pub const KILL: &str = "kill";
    pub const POWER_LOSS: &str = "power-loss";
    pub const DISK_ERROR: &str = "disk-error";
    pub const SLOW_DISK: &str = "slow-disk";
    pub const TORN_WRITE: &str = "torn-write";
    pub const KILL_BEFORE_RENAME: &str = "kill-before-rename";
    /// The pipe medium (`Outbox::spawn`), written as the parent's records
    /// with the child's name as msg: a child was spawned, became ready,
    /// ended (reason: exited, terminated, killed, host down).
    pub const SPAWN: &str = "spawn";
    pub const READY: &str = "ready";
    pub const EXIT: &str = "exit";
    /// A file operation (`sim/src/fs.rs`).
    pub const FILE: &str = "file";
    /// Stream records (net level): a connect began, it was established,
    /// a listener accepted one, the peer's FIN was read, a connection
    /// failed (refused, reset, timed out), a packet was retransmitted, and
    /// why the stack refused or reset (`refused`, `reset`, `stale`,
    /// `timed-out`).
    pub const CONNECT: &str = "connect";
    pub const CONNECTED: &str = "connected";
    pub const ACCEPTED: &str = "accepted";
    pub const EOF: &str = "eof";
    pub const CONN_ERROR: &str = "conn-error";
    pub const RETRANSMIT: &str = "retransmit";
    pub const REFUSED: &str = "refused";
    pub const RESET: &str = "reset";
    pub const STALE: &str = "stale";
    pub const TIMED_OUT: &str = "timed-out";
}

/// A reason a record kind can give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Exactly this text.
    Is(&'static str),
    /// This text, then what the second describes:
    /// `Family("loss (", "<packet>)")`.
    Family(&'static str, &'static str),
    /// One of the machine's `Deadline::reason`s (the model declares them).
    Deadline,
}

/// A record kind someone writes, and every reason it gives: the vocabulary
/// `[[expect]]`s are checked against (`docs/trace-format.md` lists it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordKind {
    pub kind: &'static str,
    pub level: Level,
    /// Empty: its records have no reason.
    pub reasons: &'static [Reason],
    /// What it records, and its `msg`; one line.
    pub about: &'static str,
}

impl RecordKind {
    /// A decision record of a model.
    pub const fn decision(
        kind: &'static str,
        reasons: &'static [Reason],
        about: &'static str,
    ) -> Self {
        RecordKind {
            kind,
            level: Level::Decision,
            reasons,
            about,
        }
    }

    const fn net(kind: &'static str, reasons: &'static [Reason], about: &'static str) -> Self {
        RecordKind {
            kind,
            level: Level::Net,
            reasons,
            about,
        }
    }
}

const DROP_REASONS: &[Reason] = &[
    Reason::Is("loss"),
    Reason::Is("partition"),
    Reason::Is("node down"),
    Reason::Family("loss (", "<packet>)"),
    Reason::Family("partition (", "<packet>)"),
    Reason::Family("host down (", "<packet>)"),
];
/// A packet's label (`SYN`, `SYN-ACK`, `ACK`, `data`, `FIN`, `RST`) and
/// the retransmission's number.
const RETRANSMIT_REASONS: &[Reason] = &[
    Reason::Family("SYN #", "<n>"),
    Reason::Family("SYN-ACK #", "<n>"),
    Reason::Family("ACK #", "<n>"),
    Reason::Family("data #", "<n>"),
    Reason::Family("FIN #", "<n>"),
    Reason::Family("RST #", "<n>"),
];

/// Every record kind the engine writes (both engines write the same).
pub const ENGINE_KINDS: &[RecordKind] = &[
    RecordKind::net(
        kind::SEND,
        &[],
        "a message left its node (msg: the message)",
    ),
    RecordKind::net(
        kind::DELIVER,
        &[],
        "a message reached its node (msg: the message)",
    ),
    RecordKind::net(
        kind::DROP,
        DROP_REASONS,
        "a message or packet was lost (msg: the message)",
    ),
    RecordKind::net(kind::DUPLICATE, &[], "the network duplicated a datagram"),
    RecordKind::net(
        kind::SEND_FAILED,
        &[Reason::Is("connection reset"), Reason::Is("broken pipe")],
        "a send failed at once",
    ),
    RecordKind::net(kind::TIMER, &[Reason::Deadline], "a node's timer fired"),
    RecordKind::net(
        kind::CONNECT,
        &[],
        "a connect began (msg: the connection, `conn#7`)",
    ),
    RecordKind::net(kind::CONNECTED, &[], "a connect was established"),
    RecordKind::net(kind::ACCEPTED, &[], "a listener accepted a connection"),
    RecordKind::net(kind::EOF, &[], "the peer's FIN was read"),
    RecordKind::net(
        kind::CONN_ERROR,
        &[],
        "a connection failed (msg: how, e.g. `connection refused`)",
    ),
    RecordKind::net(
        kind::RETRANSMIT,
        RETRANSMIT_REASONS,
        "a packet was sent again (msg: the frame)",
    ),
    RecordKind::net(
        kind::REFUSED,
        &[Reason::Is("nobody listening")],
        "the stack answered a SYN with a RST",
    ),
    RecordKind::net(
        kind::RESET,
        &[Reason::Is("RST received"), Reason::Is("data after close")],
        "the stack reset a connection",
    ),
    RecordKind::net(
        kind::STALE,
        &[Reason::Is("no such connection here")],
        "a packet for an unknown connection",
    ),
    RecordKind::net(
        kind::TIMED_OUT,
        &[
            Reason::Is("SYN retries exhausted"),
            Reason::Is("SYN-ACK retries exhausted"),
            Reason::Is("retransmissions exhausted"),
        ],
        "the stack gave a connection up (a half-open one, silently, after its SYN-ACK retries)",
    ),
    RecordKind::net(
        kind::FILE,
        &[
            Reason::Is("mkdir"),
            Reason::Is("write"),
            Reason::Is("rename"),
            Reason::Is("read"),
            Reason::Family("mkdir failed: ", "<errno>"),
            Reason::Family("write failed: ", "<errno>"),
            Reason::Family("rename failed: ", "<errno>"),
            Reason::Family("read failed: ", "<errno>"),
            Reason::Is("killed before rename"),
        ],
        "a file operation on the node's host (msg: the path, `from -> to` for a rename)",
    ),
    RecordKind::decision(kind::START, &[], "fault: a node started"),
    RecordKind::decision(kind::STOP, &[], "fault: a node stopped gracefully"),
    RecordKind::decision(kind::KILL, &[], "fault: a node's process died"),
    RecordKind::decision(kind::CRASH, &[], "fault: a node's host died"),
    RecordKind::decision(kind::RESTART, &[], "fault: a node started again"),
    RecordKind::decision(
        kind::PARTITION,
        &[],
        "fault (node `net`; msg: `a,b->c,d ...`)",
    ),
    RecordKind::decision(
        kind::HEAL,
        &[],
        "fault: every partition removed (node `net`)",
    ),
    RecordKind::decision(kind::CLOCK_JUMP, &[], "fault (msg: `+1h`, `-5m`)"),
    RecordKind::decision(kind::CLOCK_DRIFT, &[], "fault (msg: `<ppm>ppm`)"),
    RecordKind::decision(kind::PAUSE, &[], "fault: SIGSTOP"),
    RecordKind::decision(kind::RESUME, &[], "fault: SIGCONT"),
    RecordKind::decision(
        kind::LINK,
        &[],
        "fault (node `net`; msg: `from->to` and the link)",
    ),
    RecordKind::decision(kind::BREAK, &[], "fault (node `net`; msg: `from->to`)"),
    RecordKind::decision(kind::REPAIR, &[], "fault (node `net`; msg: `from->to`)"),
    RecordKind::decision(kind::HOLD, &[], "fault (node `net`; msg: `from->to`)"),
    RecordKind::decision(kind::STALL, &[], "fault (node `net`; msg: `from->to`)"),
    RecordKind::decision(kind::RELEASE, &[], "fault (node `net`; msg: `from->to`)"),
    RecordKind::decision(
        kind::POWER_LOSS,
        &[],
        "fault: a host lost power or crashed (node `net`; msg: the host)",
    ),
    RecordKind::decision(
        kind::DISK_ERROR,
        &[],
        "fault (node `net`; msg: `host path errno`, `*` for every path, `ok` when cleared)",
    ),
    RecordKind::decision(
        kind::SLOW_DISK,
        &[],
        "fault (node `net`; msg: `host write-time`)",
    ),
    RecordKind::decision(
        kind::TORN_WRITE,
        &[],
        "fault: the next write lands half written (node `net`; msg: `host path`)",
    ),
    RecordKind::decision(
        kind::SPAWN,
        &[],
        "a process spawned a child on its host (msg: the child's name)",
    ),
    RecordKind::decision(
        kind::READY,
        &[],
        "a spawned child finished loading and runs (msg: its name)",
    ),
    RecordKind::decision(
        kind::EXIT,
        &[
            Reason::Is("exited"),
            Reason::Is("terminated"),
            Reason::Is("killed"),
            Reason::Is("host down"),
            Reason::Is("no machine"),
        ],
        "a spawned child ended; its parent reads EOF at once (msg: its name)",
    ),
    RecordKind::decision(
        kind::KILL_BEFORE_RENAME,
        &[],
        "fault: the node's next rename kills it instead (then a `kill` record, msg `before rename`)",
    ),
];

/// What the trace prints for a network-wide record's node (`Record::node`
/// `None`): no node may be named so.
pub const NET: &str = "net";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub t: Timestamp,
    /// `None` for network-wide events (partition, heal), printed as `net`.
    pub node: Option<NodeId>,
    pub kind: &'static str,
    pub peer: Option<NodeId>,
    pub reason: Option<Cow<'static, str>>,
    pub msg: Option<Cow<'static, str>>,
    pub level: Level,
}

impl Record {
    /// A network-level record (hidden by `--decisions`, never in snapshots).
    pub fn net(
        t: Timestamp,
        node: NodeId,
        kind: &'static str,
        peer: Option<NodeId>,
        reason: Option<Cow<'static, str>>,
        msg: Option<Cow<'static, str>>,
    ) -> Record {
        Record {
            t,
            node: Some(node),
            kind,
            peer,
            reason,
            msg,
            level: Level::Net,
        }
    }
}

/// Records per storage chunk. A long run grows the trace chunk by chunk, so
/// it never copies what it holds to double a `Vec` (which at a million
/// records briefly needs twice the memory and dominated large runs).
const CHUNK: usize = 1 << 14;

/// All records of a run, with the node names to print them.
#[derive(Debug)]
pub struct Trace {
    names: Vec<String>,
    chunks: Vec<Vec<Record>>,
    keep: Level,
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    t_us: u64,
    node: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<&'a str>,
}

impl Trace {
    /// `keep`: the most detailed level recorded; `Level::Decision` skips
    /// network records entirely (what benchmarks and fuzzing want).
    pub fn new(names: Vec<String>, keep: Level) -> Self {
        Trace {
            names,
            chunks: Vec::new(),
            keep,
        }
    }

    pub fn wants(&self, level: Level) -> bool {
        level <= self.keep
    }

    pub fn push(&mut self, record: Record) {
        if !self.wants(record.level) {
            return;
        }
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
    }

    /// Every kept record, in the order they happened.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.chunks.iter().flatten()
    }

    pub fn decisions(&self) -> impl Iterator<Item = &Record> {
        self.records().filter(|r| r.level == Level::Decision)
    }

    pub fn name(&self, node: NodeId) -> &str {
        &self.names[node.0]
    }

    pub fn node_name(&self, node: Option<NodeId>) -> &str {
        node.map_or(NET, |n| self.name(n))
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Name a node added during the run (a spawned child): the next id.
    pub fn add_name(&mut self, name: String) -> NodeId {
        self.names.push(name);
        NodeId(self.names.len() - 1)
    }

    pub fn write_jsonl(&self, records: &[&Record], mut w: impl io::Write) -> io::Result<()> {
        for r in records {
            let json = JsonRecord {
                t_us: r.t.as_us(),
                node: self.node_name(r.node),
                kind: r.kind,
                peer: r.peer.map(|p| self.name(p)),
                reason: r.reason.as_deref(),
                msg: r.msg.as_deref(),
            };
            serde_json::to_writer(&mut w, &json)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// One aligned line: `0:11:30.000  dir  evict  alice  pong timeout`.
    pub fn text_line(&self, r: &Record) -> String {
        let mut line = format!(
            "{:>15}  {:<8} {:<12}",
            r.t.to_string(),
            self.node_name(r.node),
            r.kind
        );
        if let Some(p) = r.peer {
            let _ = write!(line, " {:<8}", self.name(p));
        }
        if let Some(reason) = &r.reason {
            let _ = write!(line, " {reason}");
        }
        if let Some(msg) = &r.msg {
            let _ = write!(line, " {msg}");
        }
        line.truncate(line.trim_end().len());
        line
    }

    pub fn write_text(&self, records: &[&Record], mut w: impl io::Write) -> io::Result<()> {
        for r in records {
            writeln!(w, "{}", self.text_line(r))?;
        }
        Ok(())
    }
}

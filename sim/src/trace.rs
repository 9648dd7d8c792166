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
}

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
        node.map_or("net", |n| self.name(n))
    }

    pub fn names(&self) -> &[String] {
        &self.names
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

//! A scripted machine: it does what its script says at given times
//! (listen, connect, write, close, reset) and records every input it gets
//! as a decision (`in`, with the peer). It exercises a medium, not a
//! heartbeat: the stream medium's tests drive it on both engines, and it
//! is a starting point for checking your own assumptions about
//! connections (`docs/streams.md`).

use std::borrow::Cow;

use crate::stream::ConnId;
use crate::time::Timestamp;
use crate::{Deadline, Input, Machine, NodeId, Now, Outbox};

/// What a scripted node does at a time (on its monotonic clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    Listen,
    Connect(NodeId),
    /// Write on the node's newest connection (awaited: its `SendDone` is
    /// recorded).
    Write(&'static str),
    Close,
    Reset,
}

/// Does its script and records every input it gets as an `in` decision:
/// `connected conn#1`, `accepted conn#1`, `connect-failed <error>`,
/// `data <msg>`, `closed`, `reset <error>`, `done <result>`, `stop`.
#[derive(Clone, Debug)]
pub struct Script {
    acts: Vec<(Timestamp, Act)>,
    conn: Option<ConnId>,
}

impl Script {
    /// `acts` in time order.
    pub fn new(acts: Vec<(Timestamp, Act)>) -> Script {
        Script { acts, conn: None }
    }
}

impl Machine for Script {
    type Msg = String;
    fn handle(&mut self, now: Now, input: Input<String>, out: &mut Outbox<String>) {
        let line = match &input {
            Input::Connected { conn, .. } => Some(format!("connected {conn}")),
            Input::Accepted { conn, .. } => {
                self.conn = Some(*conn);
                Some(format!("accepted {conn}"))
            }
            Input::ConnectFailed { error, .. } => Some(format!("connect-failed {error}")),
            Input::Data { msg, .. } => Some(format!("data {msg}")),
            Input::Closed { .. } => Some("closed".into()),
            Input::Reset { error, .. } => Some(format!("reset {error}")),
            Input::SendDone { result, .. } => Some(format!("done {result:?}")),
            Input::Stop => Some("stop".into()),
            Input::Start | Input::Timeout | Input::Recv { .. } => None,
        };
        let peer = match &input {
            Input::Connected { peer, .. }
            | Input::Accepted { peer, .. }
            | Input::ConnectFailed { peer, .. }
            | Input::Data { peer, .. }
            | Input::Closed { peer, .. }
            | Input::Reset { peer, .. } => Some(*peer),
            _ => None,
        };
        if let Some(line) = line {
            out.record("in", peer, None, Some(line.into()));
        }
        if !matches!(input, Input::Start | Input::Timeout) {
            return;
        }
        while self.acts.first().is_some_and(|(t, _)| *t <= now.mono) {
            let (_, act) = self.acts.remove(0);
            match (act, self.conn) {
                (Act::Listen, _) => out.listen(),
                (Act::Connect(to), _) => self.conn = Some(out.connect(to)),
                (Act::Write(m), Some(c)) => out.send_awaited(c, m.to_string(), 0),
                (Act::Close, Some(c)) => out.close(c),
                (Act::Reset, Some(c)) => out.reset(c),
                (Act::Write(_) | Act::Close | Act::Reset, None) => {}
            }
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        self.acts.first().map(|(at, _)| Deadline {
            at: *at,
            reason: "act",
        })
    }
    fn describe(msg: &String) -> Cow<'static, str> {
        Cow::Owned(msg.clone())
    }
}

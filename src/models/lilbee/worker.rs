//! A worker process: `run_worker`'s recv loop (worker_runtime.py at
//! 13277138), with a behaviour the scenario picks.
//!
//! The loop reads one frame at a time and handles it to the end before the
//! next (`conn.poll(0.5)` returns as soon as a frame is there, so the poll
//! adds no delay): `shutdown` -> `ack`, then the loop returns and the
//! process exits; `ping` -> `pong`; a request -> the role's handler, which
//! answers `result` after its work (`answer_delay`); EOF -> return (exit).
//! A ping waits behind a request in progress: one pipe, one thread.
//!
//! A stream request (`PipeChannel.stream`'s `_send(kind, payload)`) runs
//! the role's streaming handler: `stream_chunks` `stream_chunk` frames, one
//! every `answer_delay`, then `stream_end` at once. The handlers are not
//! in the code index at 13277138 (the chat worker's generation loop); the
//! chunk count and rate stand for its tokens. The loop is single-threaded:
//! a ping that arrives during a stream waits, and is answered (`pong`)
//! after `stream_end`; `_dispatch_kind`'s `if state.stream_in_flight:`
//! (drop the ping) cannot see a ping while the handler runs.

use std::collections::VecDeque;

use heartsim_sim::{ConnId, Deadline, Dest, Duration, Outbox, Timestamp};
use serde::{Deserialize, Serialize};

use super::{Frame, Msg};

/// What a worker does besides answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Behaviour {
    /// Answers every frame (a request after `answer_delay`).
    Healthy,
    /// Dies (EOF at the parent) when a request (a call's or a stream's)
    /// reaches it.
    CrashOnCall,
    /// Dies when a ping reaches it.
    CrashOnPing,
    /// Dies this long after it is ready, between calls or not.
    DieAfter(#[serde(with = "us")] Duration),
    /// Never answers anything and never reads EOF (stuck in native code);
    /// only `terminate` ends it.
    Hang,
}

/// How one spawned worker behaves: the role's behaviour for its first
/// `bad_spawns` spawns, healthy after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub role: String,
    pub behaviour: Behaviour,
    #[serde(with = "us")]
    pub answer_delay: Duration,
    /// A stream's chunks before its end.
    pub stream_chunks: u32,
}

/// A [`Duration`] on the wire as microseconds (the madsim engine carries
/// messages as JSON).
mod us {
    use heartsim_sim::Duration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_us())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_us)
    }
}

#[derive(Clone, Debug)]
pub struct Worker {
    spec: WorkerSpec,
    pipe: Option<ConnId>,
    /// Frames read but not yet handled (the loop handles one at a time).
    queue: VecDeque<Frame>,
    /// A request in progress answers `result` (or a stream its next
    /// chunk) at this time.
    busy_until: Option<Timestamp>,
    /// A stream in progress: chunks still to send (`None`: a plain request).
    stream_left: Option<u32>,
    die_at: Option<Timestamp>,
    /// EOF came while a request was in progress.
    eof: bool,
}

impl Worker {
    pub fn new(spec: WorkerSpec) -> Worker {
        Worker {
            spec,
            pipe: None,
            queue: VecDeque::new(),
            busy_until: None,
            stream_left: None,
            die_at: None,
            eof: false,
        }
    }

    pub fn on_start(&mut self, now: Timestamp) {
        if let Behaviour::DieAfter(d) = self.spec.behaviour {
            self.die_at = Some(now + d);
        }
    }

    pub fn on_frame(&mut self, now: Timestamp, conn: ConnId, frame: Frame, out: &mut Outbox<Msg>) {
        self.pipe = Some(conn);
        if self.spec.behaviour == Behaviour::Hang {
            return;
        }
        self.queue.push_back(frame);
        self.run(now, out);
    }

    /// EOF on the pipe: `except EOFError: return` (`run_worker`), unless
    /// hung. The loop reads EOF only at its next `conn.recv()`, after the
    /// handler in progress; that handler's `conn.send` of its result then
    /// fails (`BrokenPipeError`, uncaught in `run_worker`), so a busy worker
    /// exits when its request is done, its queued frames unread.
    pub fn on_eof(&mut self, out: &mut Outbox<Msg>) {
        if self.spec.behaviour == Behaviour::Hang {
            return;
        }
        if self.busy_until.is_some() {
            self.eof = true;
        } else {
            out.exit();
        }
    }

    pub fn on_timeout(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        if self.die_at.is_some_and(|t| now >= t) {
            out.exit();
            return;
        }
        if self.busy_until.is_some_and(|t| now >= t) {
            self.busy_until = None;
            if self.eof {
                return out.exit();
            }
            match self.stream_left {
                None => self.send(Frame::Result, out),
                Some(left) => {
                    self.send(Frame::StreamChunk, out);
                    self.stream(now, left - 1, out);
                }
            }
            self.run(now, out);
        }
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        let busy = self.busy_until.map(|at| Deadline { at, reason: "work" });
        let die = self.die_at.map(|at| Deadline { at, reason: "die" });
        [busy, die].into_iter().flatten().min_by_key(|d| d.at)
    }

    fn send(&self, frame: Frame, out: &mut Outbox<Msg>) {
        if let Some(conn) = self.pipe {
            out.send(Dest::Conn(conn), Msg::Frame(frame));
        }
    }

    /// A stream with `left` chunks to go: the next after `answer_delay`
    /// (all at once when it is zero), then `stream_end`.
    fn stream(&mut self, now: Timestamp, left: u32, out: &mut Outbox<Msg>) {
        self.stream_left = None;
        if left == 0 {
            return self.send(Frame::StreamEnd, out);
        }
        if self.spec.answer_delay == Duration::ZERO {
            for _ in 0..left {
                self.send(Frame::StreamChunk, out);
            }
            return self.send(Frame::StreamEnd, out);
        }
        self.stream_left = Some(left);
        self.busy_until = Some(now + self.spec.answer_delay);
    }

    /// `_dispatch_kind` (worker_runtime.py) for each waiting frame, until a
    /// request keeps the loop busy.
    fn run(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        while self.busy_until.is_none() {
            let Some(frame) = self.queue.pop_front() else {
                return;
            };
            match frame {
                Frame::Shutdown => {
                    self.send(Frame::Ack, out);
                    out.exit();
                    return;
                }
                Frame::Ping if self.spec.behaviour == Behaviour::CrashOnPing => {
                    out.exit();
                    return;
                }
                Frame::Ping => self.send(Frame::Pong, out),
                Frame::Request if self.spec.behaviour == Behaviour::CrashOnCall => {
                    out.exit();
                    return;
                }
                Frame::Request => {
                    if self.spec.answer_delay == Duration::ZERO {
                        self.send(Frame::Result, out);
                    } else {
                        self.busy_until = Some(now + self.spec.answer_delay);
                    }
                }
                Frame::Stream if self.spec.behaviour == Behaviour::CrashOnCall => {
                    out.exit();
                    return;
                }
                Frame::Stream => self.stream(now, self.spec.stream_chunks, out),
                // Replies never travel to a worker.
                Frame::Pong
                | Frame::Ack
                | Frame::Result
                | Frame::StreamChunk
                | Frame::StreamEnd => {}
            }
        }
    }
}

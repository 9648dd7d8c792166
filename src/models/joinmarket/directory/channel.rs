//! joinmarket-rs's per-peer tasks and what they write.
//!
//! Each peer has a task (`peer.rs` ~384-463) whose `select!` loop reads the
//! peer's lines, writes frames from its probe channel (the heartbeat's
//! PINGs and `!orderbook`s, `try_send` into a bounded mpsc), writes what
//! comes on the router's broadcast channel (relayed PUBMSGs and makers'
//! departures, `router.rs` `broadcast`, `broadcast_raw`;
//! `BROADCAST_CAPACITY` 256), and answers a PING inline. Nobody awaits a
//! task's writes but the task itself: while one is blocked on full
//! buffers, the task reads nothing and takes nothing more from its
//! channels, which fill behind it. A receiver more than 256 broadcasts
//! behind gets `RecvError::Lagged` at its next `recv` and the task ends
//! ("Peer lagged on broadcast channel; disconnecting", ~431-435).
//!
//! `select!` picks among ready arms at random; the model takes, after a
//! write, the cancellation first, then the broadcast channel, then the
//! lines that came meanwhile.

use std::collections::VecDeque;

use heartsim_sim::{Input, Now, Outbox};

use super::{ConnId, Directory, KeyId, StreamId};
use crate::models::joinmarket::{kind, Frame};

/// `BROADCAST_CAPACITY` (`router.rs`).
const BROADCAST_CAPACITY: usize = 256;

/// A peer task inside a write (`writer.write_all(..).await` then `flush`).
/// Until the write returns the task reads nothing and does not see its
/// cancellation: an eviction meanwhile removes the peer's metadata at once
/// (`router.rs` `collect_pong_timeouts`), but the connection stays open
/// and the nick stays admitted until the task gets back to its loop.
#[derive(Debug, Default)]
pub(super) struct Writing {
    writes: u32,
    pub(super) held: Vec<Input<Frame>>,
    /// The key it holds, if the heartbeat evicted it meanwhile, and the
    /// departure it broadcasts when it ends (a maker's).
    pub(super) evicted: Option<(KeyId, Option<Frame>)>,
    /// Broadcasts it has not taken yet.
    queue: VecDeque<Frame>,
    /// More than [`BROADCAST_CAPACITY`] came while it wrote.
    lagged: bool,
}

impl Directory {
    /// The task of `stream` writes `frame`; its `SendDone` is
    /// [`Self::task_write_done`].
    pub(super) fn task_write(&mut self, stream: StreamId, frame: Frame, out: &mut Outbox<Frame>) {
        let token = self.next_token;
        self.next_token += 1;
        self.task_writes.insert(token, stream);
        self.writing.entry(stream).or_default().writes += 1;
        out.send_awaited(stream, frame, token);
    }

    /// `router.broadcast` / `broadcast_raw`: every registered peer's task
    /// but `except`'s gets `frame`, at once if it is free, else after its
    /// write.
    pub(super) fn task_broadcast(
        &mut self,
        except: Option<KeyId>,
        frame: &Frame,
        out: &mut Outbox<Frame>,
    ) {
        let targets: Vec<StreamId> = self
            .registered_but(except)
            .into_iter()
            .map(|id| self.conns[&id].stream)
            .collect();
        for stream in targets {
            match self.writing.get_mut(&stream) {
                Some(w) if w.queue.len() >= BROADCAST_CAPACITY => w.lagged = true,
                Some(w) => w.queue.push_back(frame.clone()),
                None => self.task_write(stream, frame.clone(), out),
            }
        }
    }

    /// A maker's task ended: "Broadcast disconnect notification before
    /// deregistering" (`peer.rs` ~465-478), to every other task.
    pub(super) fn task_farewell(&mut self, id: ConnId) -> Option<Frame> {
        let conn = self.conns.get(&id)?;
        (conn.maker && self.broadcasts).then(|| self.departure_entry(id))
    }

    /// A peer task's write returned. Back in its loop, it sees its
    /// cancellation if it was evicted (it breaks, deregisters and drops the
    /// socket), or a lag (the same, with a disconnect), or writes its next
    /// broadcast, or reads what came meanwhile.
    pub(super) fn task_write_done(&mut self, now: Now, token: u64, out: &mut Outbox<Frame>) {
        let stream = self
            .task_writes
            .remove(&token)
            .expect("checked by the caller");
        let Some(writing) = self.writing.get_mut(&stream) else {
            return; // the connection failed meanwhile
        };
        writing.writes -= 1;
        if writing.writes > 0 {
            return;
        }
        if writing.evicted.is_none() && !writing.lagged {
            if let Some(frame) = writing.queue.pop_front() {
                return self.task_write(stream, frame, out);
            }
        }
        let writing = self.writing.remove(&stream).expect("just seen");
        // Lines that came while it wrote were never read: dropping the
        // socket with them in the kernel resets it (Linux `__tcp_close`,
        // "Unread data was tossed").
        let unread = writing.held.iter().any(|i| matches!(i, Input::Data { .. }));
        if let Some((key, farewell)) = writing.evicted {
            if unread {
                out.reset(stream);
            } else {
                out.close(stream);
            }
            self.release(key);
            if let Some(frame) = farewell {
                self.task_broadcast(None, &frame, out);
            }
            return;
        }
        if writing.lagged {
            if let Some(&id) = self.by_stream.get(&stream) {
                let node = self.conns[&id].node;
                let reason = "lagged on the broadcast channel".into();
                out.record(kind::DISCONNECT, Some(node), Some(reason), None);
                self.task_ends(id, !unread, out);
                if unread {
                    out.reset(stream);
                }
            }
            return;
        }
        for input in writing.held {
            self.handle(now, input, out);
        }
    }

    /// joinmarket-rs: a registered peer's task ends (EOF, an error, a
    /// limit, a lag, an eviction seen while idle): a maker's departure is
    /// broadcast, the peer deregistered and released, the socket dropped.
    pub(super) fn task_ends(&mut self, id: ConnId, close_it: bool, out: &mut Outbox<Frame>) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let stream = conn.stream;
        let farewell = self.task_farewell(id);
        self.unregister(id);
        if close_it {
            out.close(stream);
        }
        if let Some(frame) = farewell {
            self.task_broadcast(None, &frame, out);
        }
    }
}

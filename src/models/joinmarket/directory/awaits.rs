//! joinmarket-ng's awaited writes beyond the heartbeat's own: the
//! "disconnected" PEERLIST broadcast that follows every departure, PUBMSG
//! relays, and the closes that wait for a buffer to drain.
//!
//! Upstream each of these is awaited by the coroutine that starts it: the
//! sweep for its evictions, the departing peer's handler for its cleanup,
//! the sender's handler for a relay. A coroutine here is a [`Ctx`]; what it
//! still has to do is its [`Awaits`]: steps run one after another, each
//! waiting for the writes and closes before it. While a handler awaits, its
//! connection's lines wait unread; while the sweep awaits, it does not go
//! on. With room in the buffers every write completes at once and all of
//! this happens in one instant; with full buffers it blocks as upstream
//! does (HEAD bounds each write by 30 s and unregisters a target whose
//! write failed, `_handle_send_failed`; eb812d4c waits).

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};

use heartsim_sim::{Input, Now, Outbox, Timestamp};

use super::{ConnId, Directory, Phase, StreamId};
use crate::models::joinmarket::{kind, Frame, Profile};

/// A coroutine of the directory that awaits writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Ctx {
    /// The heartbeat loop.
    Sweep,
    /// The handler (reader) of one connection.
    Reader(StreamId),
}

/// One thing a coroutine does once what came before it is done.
#[derive(Debug)]
pub(super) enum Step {
    /// `_batched_broadcast_iter`: one batch of up to 50 writes, run
    /// together (`asyncio.gather`); the next batch starts when this one is
    /// done.
    Batch(Frame, Vec<ConnId>),
    /// eb812d4c unregisters after its broadcast.
    Unregister(ConnId),
    /// Close a connection: waits while a write abandoned on it is queued
    /// (`writer.close(); await writer.wait_closed()`).
    Close(StreamId),
    /// HEAD's verified registration goes on after the displaced
    /// connection's broadcast and close: the `ok` result, then HANDSHAKED.
    Handshaked(ConnId),
    /// `_handle_ping`: the PONG, awaited by the handler (HEAD within 30 s
    /// through `_send_to_peer`, eb812d4c without a bound); a failure is
    /// only logged (`except Exception: logger.trace`).
    Pong(ConnId),
}

/// What a coroutine still awaits.
#[derive(Debug, Default)]
pub(super) struct Awaits {
    steps: VecDeque<Step>,
    writes: BTreeSet<u64>,
    drains: BTreeSet<StreamId>,
    /// A handler's connection: the lines that came while it awaited.
    pub(super) held: Vec<Input<Frame>>,
}

/// An awaited write of a broadcast or relay.
#[derive(Clone, Copy, Debug)]
pub(super) struct NgWrite {
    ctx: Ctx,
    target: StreamId,
    /// A failure is only logged (a PONG), not `_handle_send_failed`.
    quiet: bool,
    /// When it started (monotonic): HEAD gives up 30 s later.
    pub(super) since: Timestamp,
}

/// `DEFAULT_BROADCAST_BATCH_SIZE` (`message_router.py`, both commits).
const BATCH: usize = 50;

impl Directory {
    /// Whether the sweep awaits something.
    pub(super) fn sweep_blocked(&self) -> bool {
        self.awaits.contains_key(&Ctx::Sweep)
    }

    /// Whether `stream`'s handler awaits something (its lines wait).
    pub(super) fn reader_blocked(&mut self, stream: StreamId) -> Option<&mut Awaits> {
        self.awaits.get_mut(&Ctx::Reader(stream))
    }

    /// The registered peers a broadcast about `key` goes to, in registry
    /// order: HEAD every HANDSHAKED owner but the key's
    /// (`iter_connected_owners`); eb812d4c every connected peer whose
    /// location differs (`broadcast_peer_disconnect` looks the departed
    /// peer up by location, so a taker's departure goes to no one).
    fn targets(&self, key: super::KeyId, maker: bool) -> Vec<ConnId> {
        if self.profile == Profile::JoinmarketNgEb812d4c && !maker {
            return Vec::new();
        }
        self.registered_except(key)
    }

    /// Every registered (HANDSHAKED) connection but `key`'s, in registry
    /// order.
    pub(super) fn registered_except(&self, key: super::KeyId) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .idle_index
            .iter()
            .map(|(_, id)| *id)
            .filter(|id| self.conns[id].key != key)
            .collect();
        ids.sort_unstable_by_key(|id| self.conns[id].order);
        ids
    }

    /// The "disconnected" PEERLIST entry about `id`.
    pub(super) fn departure_entry(&self, id: ConnId) -> Frame {
        let conn = &self.conns[&id];
        Frame::PeerList {
            nick: conn.nick.clone(),
            location: conn.location.clone(),
        }
    }

    pub(super) fn batches(frame: &Frame, targets: Vec<ConnId>) -> impl Iterator<Item = Step> + '_ {
        let mut targets = targets.into_iter().peekable();
        std::iter::from_fn(move || {
            targets.peek()?;
            let batch: Vec<ConnId> = targets.by_ref().take(BATCH).collect();
            Some(Step::Batch(frame.clone(), batch))
        })
    }

    /// A registered connection leaves (evicted, closed, reset, displaced):
    /// the record, the registry, the "disconnected" broadcast, the close,
    /// in each profile's order, awaited by `ctx`. HEAD `_evict_peer` /
    /// `_cleanup_peer` -> `_remove_owned_peer_state` (unregister, then
    /// broadcast) -> `_close_connection_generation`; eb812d4c broadcasts
    /// first, then unregisters, then closes (`server.py@eb8` ~340-361,
    /// 402-440); joinmarket-rs's heartbeat awaits nothing (its tasks
    /// broadcast maker departures through a channel, not modelled).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn depart(
        &mut self,
        now: Now,
        ctx: Ctx,
        id: ConnId,
        record: (&'static str, Cow<'static, str>, Option<Cow<'static, str>>),
        close_it: bool,
        out: &mut Outbox<Frame>,
    ) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (stream, node, key, maker) = (conn.stream, conn.node, conn.key, conn.maker);
        let (k, reason, msg) = record;
        out.record(k, Some(node), Some(reason), msg);
        if !self.profile.is_ng() || !self.broadcasts {
            self.unregister(id);
            if close_it {
                out.close(stream);
            }
            return;
        }
        let frame = self.departure_entry(id);
        let targets = self.targets(key, maker);
        let mut steps: Vec<Step> = Vec::new();
        if self.profile == Profile::JoinmarketNgEb812d4c {
            steps.extend(Self::batches(&frame, targets));
            steps.push(Step::Unregister(id));
        } else {
            self.unregister(id);
            steps.extend(Self::batches(&frame, targets));
        }
        if close_it {
            steps.push(Step::Close(stream));
        }
        self.then(ctx, steps, false);
        self.pump(now, ctx, false, out);
    }

    /// A PUBMSG from `id`'s peer is relayed to every other registered peer,
    /// awaited by its handler (`_handle_public_message`, batches of 50).
    pub(super) fn relay(
        &mut self,
        now: Now,
        stream: StreamId,
        key: super::KeyId,
        frame: Frame,
        out: &mut Outbox<Frame>,
    ) {
        if !self.broadcasts {
            return;
        }
        let steps: Vec<Step> = Self::batches(&frame, self.registered_except(key)).collect();
        let ctx = Ctx::Reader(stream);
        self.then(ctx, steps, false);
        self.pump(now, ctx, false, out);
    }

    /// Add `steps` to what `ctx` awaits: after what it has (`front`: before
    /// it, for a failure handled inside the running batch).
    pub(super) fn then(&mut self, ctx: Ctx, steps: Vec<Step>, front: bool) {
        let a = self.awaits.entry(ctx).or_default();
        if front {
            for s in steps.into_iter().rev() {
                a.steps.push_front(s);
            }
        } else {
            a.steps.extend(steps);
        }
    }

    /// Run `ctx`'s steps until one waits. When nothing is left, resume it,
    /// unless the caller is `ctx` itself, still running (`resume` false):
    /// then the caller goes on.
    pub(super) fn pump(&mut self, now: Now, ctx: Ctx, resume: bool, out: &mut Outbox<Frame>) {
        loop {
            let Some(a) = self.awaits.get_mut(&ctx) else {
                return;
            };
            if !a.writes.is_empty() || !a.drains.is_empty() {
                return;
            }
            let Some(step) = a.steps.pop_front() else {
                let a = self.awaits.remove(&ctx).expect("just seen");
                if resume {
                    self.resume(now, ctx, a.held, out);
                }
                return;
            };
            match step {
                Step::Batch(frame, targets) => {
                    for id in targets {
                        // `_safe_send` skips a target no longer HANDSHAKED
                        // or no longer the owner.
                        let Some(conn) = self.conns.get(&id) else {
                            continue;
                        };
                        if !self.idle_index.contains(&(conn.last_seen, id)) {
                            continue;
                        }
                        let target = conn.stream;
                        self.write(now, ctx, target, frame.clone(), false, out);
                    }
                }
                Step::Pong(id) => {
                    // `_handle_ping` answers only its key's current owner.
                    if let Some(conn) = self.conns.get(&id) {
                        let target = conn.stream;
                        self.write(now, ctx, target, Frame::Pong, true, out);
                    }
                }
                Step::Unregister(id) => self.unregister(id),
                Step::Close(stream) => {
                    if self.undrained.contains_key(&stream) {
                        let a = self.awaits.get_mut(&ctx).expect("pumping it");
                        a.drains.insert(stream);
                    } else {
                        out.close(stream);
                    }
                }
                Step::Handshaked(id) => {
                    if let Some(conn) = self.conns.get(&id) {
                        let stream = conn.stream;
                        out.send(
                            stream,
                            Frame::NickAuthResult(crate::models::joinmarket::AuthCode::Ok),
                        );
                        self.register(now, id, out);
                    }
                }
            }
        }
    }

    /// Start a write that `ctx` awaits.
    fn write(
        &mut self,
        now: Now,
        ctx: Ctx,
        target: StreamId,
        frame: Frame,
        quiet: bool,
        out: &mut Outbox<Frame>,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        let write = NgWrite {
            ctx,
            target,
            quiet,
            since: now.mono,
        };
        self.ng_writes.insert(token, write);
        let a = self.awaits.get_mut(&ctx).expect("a write is awaited");
        a.writes.insert(token);
        out.send_awaited(target, frame, token);
    }

    /// `ctx` has nothing left to await.
    fn resume(&mut self, now: Now, ctx: Ctx, held: Vec<Input<Frame>>, out: &mut Outbox<Frame>) {
        match ctx {
            Ctx::Sweep => {
                if matches!(self.phase, Phase::Probing(_)) {
                    self.probe_next(now, out);
                }
            }
            Ctx::Reader(_) => {
                for input in held {
                    self.handle(now, input, out);
                }
            }
        }
    }

    /// An awaited broadcast or relay write finished.
    pub(super) fn ng_write_done(
        &mut self,
        now: Now,
        token: u64,
        failed: Option<Cow<'static, str>>,
        out: &mut Outbox<Frame>,
    ) {
        let Some(w) = self.ng_writes.remove(&token) else {
            return;
        };
        if let Some(a) = self.awaits.get_mut(&w.ctx) {
            a.writes.remove(&token);
        }
        if let (Some(reason), false) = (failed, w.quiet) {
            self.send_failed(w.ctx, w.target, reason, out);
        }
        self.pump(now, w.ctx, true, out);
    }

    /// HEAD: writes past their 30 s (`wait_for` in `_send_to_peer`) are
    /// abandoned, their bytes still queued, and the target handled as
    /// failed.
    pub(super) fn expire_ng_writes(&mut self, now: Now, out: &mut Outbox<Frame>) {
        let Some(timeout) = self.profile.send_timeout() else {
            return;
        };
        let due: Vec<u64> = self
            .ng_writes
            .iter()
            .filter(|(_, w)| now.mono >= w.since + timeout)
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            if let Some(w) = self.ng_writes.get(&token) {
                self.undrained.insert(w.target, token);
            }
            self.ng_write_done(now, token, Some("send failed: ".into()), out);
        }
    }

    /// The earliest HEAD write timeout.
    pub(super) fn ng_write_deadline(&self) -> Option<Timestamp> {
        let timeout = self.profile.send_timeout()?;
        self.ng_writes.values().map(|w| w.since + timeout).min()
    }

    /// `_safe_send` failed on `target`: `_handle_send_failed`. HEAD removes
    /// the owner (no heartbeat record upstream), broadcasts its departure
    /// and closes it, inside the running batch; eb812d4c only unregisters
    /// the key, leaving the connection open with its reader.
    fn send_failed(
        &mut self,
        ctx: Ctx,
        target: StreamId,
        reason: Cow<'static, str>,
        out: &mut Outbox<Frame>,
    ) {
        let Some(&id) = self.by_stream.get(&target) else {
            return;
        };
        let conn = &self.conns[&id];
        let (node, key, maker) = (conn.node, conn.key, conn.maker);
        if self.profile == Profile::JoinmarketNgEb812d4c {
            out.record(
                kind::DISCONNECT,
                Some(node),
                Some(reason),
                Some(kind::LEFT_OPEN.into()),
            );
            self.stale_readers.insert(target, (key, node));
            self.unregister(id);
            return;
        }
        out.record(kind::DISCONNECT, Some(node), Some(reason), None);
        let frame = self.departure_entry(id);
        self.unregister(id);
        let targets = self.targets(key, maker);
        let mut steps: Vec<Step> = Self::batches(&frame, targets).collect();
        steps.push(Step::Close(target));
        self.then(ctx, steps, true);
    }

    /// A write abandoned on `stream` drained, or the connection failed:
    /// closes waiting for it go on.
    pub(super) fn drained(&mut self, now: Now, stream: StreamId, out: &mut Outbox<Frame>) {
        let waiting: Vec<Ctx> = self
            .awaits
            .iter()
            .filter(|(_, a)| a.drains.contains(&stream))
            .map(|(c, _)| *c)
            .collect();
        for ctx in waiting {
            if let Some(a) = self.awaits.get_mut(&ctx) {
                a.drains.remove(&stream);
            }
            out.close(stream);
            self.pump(now, ctx, true, out);
        }
    }

    /// A connection ended under an awaited write to it: the write fails.
    pub(super) fn fail_writes_to(&mut self, now: Now, stream: StreamId, out: &mut Outbox<Frame>) {
        let tokens: Vec<u64> = self
            .ng_writes
            .iter()
            .filter(|(_, w)| w.target == stream)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.ng_write_done(
                now,
                token,
                Some("send failed: connection reset".into()),
                out,
            );
        }
    }
}

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

use super::lock::Want;
use super::{ConnId, Directory, KeyId, Phase, StreamId};
use crate::models::joinmarket::{kind, Frame, Profile};

/// A coroutine of the directory that awaits writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Ctx {
    /// The heartbeat loop.
    Sweep,
    /// The handler (reader) of one connection.
    Reader(StreamId),
    /// HEAD: a failed write's `_handle_send_failed`, which runs inside its
    /// `_safe_send` task, beside the rest of the batch; the coroutine that
    /// awaits the batch awaits it too (`asyncio.gather`).
    Failure(u64),
}

/// One thing a coroutine does once what came before it is done.
#[derive(Debug)]
pub(super) enum Step {
    /// `_batched_broadcast_iter`: the targets, taken 50 at a time as
    /// they come (a target that left meanwhile is passed over, not counted),
    /// each batch's writes run together (`asyncio.gather`), the next batch
    /// filled once this one is done. The targets are the registry as it
    /// was when the broadcast began (`iter_connected_owners` iterates
    /// `list(self._peers.items())`).
    Broadcast(Frame, VecDeque<ConnId>),
    /// eb812d4c unregisters by key after its broadcast: whoever holds the
    /// key by then (see `unregister_key`).
    UnregisterKey {
        id: ConnId,
        key: KeyId,
        /// `_evict_peer`, which also closes the connection the key maps
        /// to; `_cleanup_peer` closes its own.
        evict: bool,
        reason: Cow<'static, str>,
    },
    /// Close a connection: waits while a write abandoned on it is queued
    /// (`writer.close(); await writer.wait_closed()`).
    Close(StreamId),
    /// HEAD's close of a connection displaced by a verified registration:
    /// the same, but given up after a bound (`_close_displaced_connections`
    /// `wait_for(connection.close(), timeout=min(nick_auth_timeout, 5.0))`,
    /// `server.py` ~470-482); the connection still closes once its buffer
    /// drains.
    CloseWithin(StreamId, heartsim_sim::Duration),
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
    /// HEAD: departures waiting for their nick's lock.
    locks: u32,
    /// HEAD: failure handlers running beside this coroutine's batch.
    children: BTreeSet<u64>,
    /// HEAD: for a failure handler, the coroutine whose batch it is in.
    parent: Option<Ctx>,
    /// A handler's connection: the lines that came while it awaited.
    pub(super) held: Vec<Input<Frame>>,
}

/// An awaited write of a broadcast or relay.
#[derive(Clone, Debug)]
pub(super) struct NgWrite {
    ctx: Ctx,
    target: StreamId,
    /// Its target's key: HEAD writes under its lock.
    key: KeyId,
    /// The line, until the write starts (HEAD: when it has the lock).
    frame: Option<Frame>,
    /// A failure is only logged (a PONG), not `_handle_send_failed`.
    quiet: bool,
    /// When it started (monotonic): HEAD gives up 30 s later.
    pub(super) since: Timestamp,
}

impl NgWrite {
    fn started(&self) -> bool {
        self.frame.is_none()
    }
}

/// HEAD: a registered connection leaving, as `_remove_owned_peer_state`
/// does it under the nick's lock: nothing if it is no longer the owner by
/// then, else the record, the registry, the broadcast, the close.
#[derive(Debug)]
pub(super) struct Departure {
    id: ConnId,
    stream: StreamId,
    record: Record,
    close: CloseWhen,
}

type Record = (&'static str, Cow<'static, str>, Option<Cow<'static, str>>);

/// Whether a departure closes its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseWhen {
    /// After a reset: nothing left to close.
    Never,
    /// `_evict_peer`, `_handle_send_failed`: only if it removed the owner.
    IfOwner,
    /// `_cleanup_peer`: its `finally` closes the handler's connection.
    Always,
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
        self.registered_but(Some(key))
    }

    /// Every registered (HANDSHAKED) connection but `except`'s, in
    /// registry order.
    pub(super) fn registered_but(&self, except: Option<KeyId>) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .idle_index
            .iter()
            .map(|(_, id)| *id)
            .filter(|id| Some(self.conns[id].key) != except)
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

    /// The broadcast of `frame` to `targets`, if there are any.
    pub(super) fn broadcast(frame: Frame, targets: Vec<ConnId>) -> Option<Step> {
        (!targets.is_empty()).then(|| Step::Broadcast(frame, targets.into()))
    }

    /// A registered connection leaves (evicted, closed, reset, displaced):
    /// the record, the registry, the "disconnected" broadcast, the close,
    /// in each profile's order, awaited by `ctx`. HEAD `_evict_peer` /
    /// `_cleanup_peer` -> `_remove_owned_peer_state` (unregister, then
    /// broadcast) -> `_close_connection_generation`; eb812d4c broadcasts
    /// first, then unregisters, then closes (`server.py@eb8` ~340-361,
    /// 402-440); joinmarket-rs's heartbeat awaits nothing (its tasks
    /// broadcast maker departures through a channel, not modelled).
    /// A registered connection leaves (evicted, closed, reset, displaced):
    /// the record, the registry, the "disconnected" broadcast, the close,
    /// in each profile's order, awaited by `ctx`. HEAD `_evict_peer` /
    /// `_cleanup_peer` -> `_remove_owned_peer_state` (under the nick's
    /// lock: unregister; then broadcast) -> `_close_connection_generation`;
    /// eb812d4c broadcasts first, then unregisters, then closes
    /// (`server.py@eb8` ~340-361, 402-440); joinmarket-rs's heartbeat
    /// awaits nothing (its tasks broadcast maker departures through a
    /// channel, not modelled).
    pub(super) fn depart(
        &mut self,
        now: Now,
        ctx: Ctx,
        id: ConnId,
        record: Record,
        close_it: bool,
        out: &mut Outbox<Frame>,
    ) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (stream, node, key, maker) = (conn.stream, conn.node, conn.key, conn.maker);
        if self.locks_on() {
            let close = match (close_it, ctx) {
                (false, _) => CloseWhen::Never,
                (true, Ctx::Sweep | Ctx::Failure(_)) => CloseWhen::IfOwner,
                (true, Ctx::Reader(_)) => CloseWhen::Always,
            };
            let departure = Departure {
                id,
                stream,
                record,
                close,
            };
            self.awaits.entry(ctx).or_default();
            self.depart_locked(ctx, departure, out);
            return self.pump(now, ctx, false, out);
        }
        let (k, reason, msg) = record;
        out.record(k, Some(node), Some(reason.clone()), msg);
        if !self.profile.is_ng() || !self.broadcasts {
            // joinmarket-rs: the peer's task ends (`channel.rs`); a run
            // without broadcasts has no farewell: the registry and the
            // close only.
            return self.task_ends(id, close_it, out);
        }
        // eb812d4c (HEAD departs under its lock, above): the broadcast, then
        // the key unregistered; an eviction closes the key's connection
        // (`unregister_key`), a cleanup its own.
        let evict = close_it && ctx == Ctx::Sweep;
        let frame = self.departure_entry(id);
        let mut steps: Vec<Step> = Self::broadcast(frame, self.targets(key, maker))
            .into_iter()
            .collect();
        steps.push(Step::UnregisterKey {
            id,
            key,
            evict,
            reason,
        });
        if close_it && !evict {
            steps.push(Step::Close(stream));
        }
        self.then(ctx, steps, false);
        self.pump(now, ctx, false, out);
    }

    /// HEAD: `departure` once the nick's lock is free; `ctx` waits for it
    /// meanwhile.
    fn depart_locked(&mut self, ctx: Ctx, departure: Departure, out: &mut Outbox<Frame>) {
        match self.conns.get(&departure.id).map(|c| c.key) {
            Some(key) if self.lock_busy(key) => {
                self.awaits.entry(ctx).or_default().locks += 1;
                self.lock_wait(key, Want::Depart(ctx, Box::new(departure)));
            }
            _ => self.departure(ctx, departure, out),
        }
    }

    /// HEAD: a departure waiting for its lock has it.
    pub(super) fn depart_granted(
        &mut self,
        ctx: Ctx,
        departure: Departure,
        out: &mut Outbox<Frame>,
    ) {
        if let Some(a) = self.awaits.get_mut(&ctx) {
            a.locks -= 1;
        }
        self.departure(ctx, departure, out);
    }

    /// HEAD `_remove_owned_peer_state`, under the lock: if the connection
    /// is still its key's owner, the record and the registry now, and the
    /// broadcast (to whoever is registered by then) and close next, before
    /// whatever `ctx` had left; else nothing but `_cleanup_peer`'s close.
    fn departure(&mut self, ctx: Ctx, d: Departure, out: &mut Outbox<Frame>) {
        let owner = self
            .conns
            .get(&d.id)
            .filter(|c| self.by_key.get(&c.key) == Some(&d.id));
        let mut steps: Vec<Step> = Vec::new();
        if let Some(conn) = owner {
            let (node, key, maker) = (conn.node, conn.key, conn.maker);
            let (k, reason, msg) = d.record;
            out.record(k, Some(node), Some(reason), msg);
            let frame = self.departure_entry(d.id);
            self.unregister(d.id);
            steps.extend(Self::broadcast(frame, self.targets(key, maker)));
            if d.close != CloseWhen::Never {
                steps.push(Step::Close(d.stream));
            }
        } else if d.close == CloseWhen::Always {
            steps.push(Step::Close(d.stream));
        }
        if steps.last().is_some_and(|s| matches!(s, Step::Close(_))) {
            self.closing.insert(d.stream);
        }
        self.then(ctx, steps, true);
    }

    /// eb812d4c, after a departure's broadcast: `peer_registry.unregister(
    /// peer_key)` removes whoever holds the key by then, and `_evict_peer`
    /// closes the connection `peer_key_to_conn_id` maps the key to
    /// (`server.py@eb8` ~414-440; `_cleanup_peer` ~339-358 closes its own).
    /// A connection that took the key over during the broadcast goes
    /// instead of the departing one: evicted and closed, or, after a
    /// cleanup, unregistered with its connection left open (its reader
    /// goes on under the key); the departing connection, already replaced,
    /// stays open.
    /// Returns the connection an eviction closes next.
    fn unregister_key(
        &mut self,
        id: ConnId,
        key: KeyId,
        evict: bool,
        reason: Cow<'static, str>,
        out: &mut Outbox<Frame>,
    ) -> Option<StreamId> {
        let &owner = self.by_key.get(&key)?;
        let conn = &self.conns[&owner];
        let (stream, node) = (conn.stream, conn.node);
        if owner != id {
            if evict {
                out.record(kind::EVICT, Some(node), Some(reason), None);
            } else {
                let msg = Some(kind::LEFT_OPEN.into());
                out.record(kind::DISCONNECT, Some(node), Some(reason), msg);
                self.stale_readers.insert(stream, (key, node));
            }
        }
        self.unregister(owner);
        evict.then_some(stream)
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
        let steps: Vec<Step> = Self::broadcast(frame, self.registered_except(key))
            .into_iter()
            .collect();
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
            if !a.writes.is_empty() || !a.drains.is_empty() || a.locks > 0 || !a.children.is_empty()
            {
                return;
            }
            let Some(step) = a.steps.pop_front() else {
                let a = self.awaits.remove(&ctx).expect("just seen");
                if let (Some(parent), Ctx::Failure(token)) = (a.parent, ctx) {
                    if let Some(p) = self.awaits.get_mut(&parent) {
                        p.children.remove(&token);
                    }
                    return self.pump(now, parent, true, out);
                }
                if resume {
                    self.resume(now, ctx, a.held, out);
                }
                return;
            };
            match step {
                Step::Broadcast(frame, mut targets) => {
                    let mut batch = 0;
                    while batch < BATCH {
                        let Some(id) = targets.pop_front() else {
                            break;
                        };
                        // `_safe_send` skips a target no longer HANDSHAKED
                        // or no longer the owner.
                        let Some(conn) = self.conns.get(&id) else {
                            continue;
                        };
                        if !self.idle_index.contains(&(conn.last_seen, id)) {
                            continue;
                        }
                        let (target, key) = (conn.stream, conn.key);
                        self.write(now, ctx, target, key, frame.clone(), false, out);
                        batch += 1;
                    }
                    if !targets.is_empty() {
                        let a = self.awaits.get_mut(&ctx).expect("pumping it");
                        a.steps.push_front(Step::Broadcast(frame, targets));
                    }
                }
                Step::Pong(id) => {
                    // `_handle_ping` answers only its key's current owner.
                    if let Some(conn) = self.conns.get(&id) {
                        let (target, key) = (conn.stream, conn.key);
                        self.write(now, ctx, target, key, Frame::Pong, true, out);
                    }
                }
                Step::UnregisterKey {
                    id,
                    key,
                    evict,
                    reason,
                } => {
                    if let Some(stream) = self.unregister_key(id, key, evict, reason, out) {
                        let a = self.awaits.get_mut(&ctx).expect("pumping it");
                        a.steps.push_front(Step::Close(stream));
                    }
                }
                // HEAD `_close_connection_generation` closes only a
                // connection still in `self.connections`: not one its own
                // handler closed meanwhile (`closing`).
                Step::Close(stream) if self.locks_on() && !self.closing.remove(&stream) => {}
                Step::Close(stream) => {
                    if self.buffered(stream) {
                        let a = self.awaits.get_mut(&ctx).expect("pumping it");
                        a.drains.insert(stream);
                    } else {
                        out.close(stream);
                    }
                }
                Step::CloseWithin(stream, _) if !self.closing.remove(&stream) => {}
                Step::CloseWithin(stream, bound) => {
                    if self.buffered(stream) {
                        let a = self.awaits.get_mut(&ctx).expect("pumping it");
                        a.drains.insert(stream);
                        self.close_bounds.insert((now.mono + bound, ctx, stream));
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

    /// A write that `ctx` awaits: it starts now, or (HEAD) once it has its
    /// target's lock.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        now: Now,
        ctx: Ctx,
        target: StreamId,
        key: KeyId,
        frame: Frame,
        quiet: bool,
        out: &mut Outbox<Frame>,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        let write = NgWrite {
            ctx,
            target,
            key,
            frame: Some(frame),
            quiet,
            since: now.mono,
        };
        self.ng_writes.insert(token, write);
        let a = self.awaits.get_mut(&ctx).expect("a write is awaited");
        a.writes.insert(token);
        if self.lock_write(key, token) {
            let started = self.start_write(now, token, out);
            debug_assert!(started, "a write starts to a current owner");
        }
    }

    /// Start a write that has its lock (the sweep's or a coroutine's):
    /// false if its target is no longer its key's HANDSHAKED owner
    /// (`_send_to_peer` raises `ValueError("Stale connection ...")`).
    pub(super) fn start_write(&mut self, now: Now, token: u64, out: &mut Outbox<Frame>) -> bool {
        let Some(w) = self.ng_writes.get(&token) else {
            return self.start_sweep_write(now, token, out);
        };
        let current = self
            .by_stream
            .get(&w.target)
            .is_some_and(|&id| self.is_current(id));
        if !current {
            return false;
        }
        let w = self.ng_writes.get_mut(&token).expect("just seen");
        w.since = now.mono;
        let frame = w.frame.take().expect("a write starts once");
        out.send_awaited(w.target, frame, token);
        true
    }

    /// HEAD: a write granted its lock found its target gone. A coroutine's
    /// `_safe_send` catches the `ValueError` and `_handle_send_failed`
    /// finds no owner to remove; the coroutine goes on.
    pub(super) fn stale_write(&mut self, token: u64) -> Option<Ctx> {
        let w = self.ng_writes.remove(&token)?;
        if let Some(a) = self.awaits.get_mut(&w.ctx) {
            a.writes.remove(&token);
        }
        Some(w.ctx)
    }

    /// `ctx` has nothing left to await.
    fn resume(&mut self, now: Now, ctx: Ctx, held: Vec<Input<Frame>>, out: &mut Outbox<Frame>) {
        match ctx {
            Ctx::Sweep => {
                if matches!(self.phase, Phase::Probing(_)) {
                    self.probe_next(now, out);
                }
            }
            Ctx::Reader(_) => self.read_held(now, held, out),
            Ctx::Failure(_) => {}
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
        // `async with` lets the lock go before the outcome reaches
        // `_safe_send`.
        self.unlock(now, w.key, token, out);
        if let (Some(reason), false) = (failed, w.quiet) {
            self.send_failed(now, &w, reason, out);
        }
        self.pump(now, w.ctx, true, out);
        self.write_over(now, w.target, out);
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
            .filter(|(_, w)| w.started() && now.mono >= w.since + timeout)
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
        self.ng_writes
            .values()
            .filter(|w| w.started())
            .map(|w| w.since + timeout)
            .min()
    }

    /// `_safe_send` failed on `target`: `_handle_send_failed`. HEAD removes
    /// the owner under its lock (no heartbeat record upstream), broadcasts
    /// its departure and closes it, beside the rest of the running batch
    /// (a [`Ctx::Failure`] that `ctx` awaits); eb812d4c only unregisters the
    /// key (`_handle_send_failed(peer_key)`, `server.py@eb8` ~385-400:
    /// whoever holds it by then), leaving the connection open with its
    /// reader.
    fn send_failed(
        &mut self,
        now: Now,
        w: &NgWrite,
        reason: Cow<'static, str>,
        out: &mut Outbox<Frame>,
    ) {
        let (ctx, target) = (w.ctx, w.target);
        if self.profile == Profile::JoinmarketNgEb812d4c {
            let Some(&owner) = self.by_key.get(&w.key) else {
                return;
            };
            let conn = &self.conns[&owner];
            let (stream, node) = (conn.stream, conn.node);
            out.record(
                kind::DISCONNECT,
                Some(node),
                Some(reason),
                Some(kind::LEFT_OPEN.into()),
            );
            self.stale_readers.insert(stream, (w.key, node));
            self.unregister(owner);
            return;
        }
        let Some(&id) = self.by_stream.get(&target) else {
            return;
        };
        let departure = Departure {
            id,
            stream: target,
            record: (kind::DISCONNECT, reason, None),
            close: CloseWhen::IfOwner,
        };
        let token = self.next_token;
        self.next_token += 1;
        let child = Ctx::Failure(token);
        self.awaits.entry(ctx).or_default().children.insert(token);
        self.awaits.insert(
            child,
            Awaits {
                parent: Some(ctx),
                ..Awaits::default()
            },
        );
        self.depart_locked(child, departure, out);
        self.pump(now, child, true, out);
    }

    /// Whether asyncio's buffer for `stream` holds bytes, which a close
    /// waits for (`writer.close(); await writer.wait_closed()`, jmcore
    /// `network.py` ~105-110; `_SelectorTransport.close` calls
    /// `connection_lost` only once its buffer is empty): a write HEAD's
    /// timeout abandoned, or one still blocked on full buffers, whoever
    /// awaits it. (Bytes past the kernel's buffers with no write blocked,
    /// which asyncio also holds below its 64 KiB high-water mark, are not
    /// seen: the engine does not split `unread_limit` into the two.)
    pub(super) fn buffered(&self, stream: StreamId) -> bool {
        self.undrained.contains_key(&stream)
            || self
                .ng_writes
                .values()
                .any(|w| w.target == stream && w.started())
            || matches!(&self.phase, Phase::Probing(s)
                if s.awaiting.is_some_and(|a| a.started && a.stream == stream))
    }

    /// A write to `stream` is over: if a close waits for the stream and
    /// nothing else is in asyncio's buffer for it, the close goes on. (Who
    /// waits is checked first: few coroutines await at once, while a
    /// broadcast has a write in flight per peer.)
    pub(super) fn write_over(&mut self, now: Now, stream: StreamId, out: &mut Outbox<Frame>) {
        let waited = self.close_on_drain.contains(&stream)
            || self.awaits.values().any(|a| a.drains.contains(&stream));
        if waited && !self.buffered(stream) {
            self.drained(now, stream, out);
        }
    }

    /// A write abandoned on `stream` drained, or the connection failed:
    /// closes waiting for it go on.
    pub(super) fn drained(&mut self, now: Now, stream: StreamId, out: &mut Outbox<Frame>) {
        if self.close_on_drain.remove(&stream) {
            out.close(stream);
        }
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
            self.close_bounds
                .retain(|&(_, c, s)| (c, s) != (ctx, stream));
            out.close(stream);
            self.pump(now, ctx, true, out);
        }
    }

    /// HEAD: closes of displaced connections past their bound: the
    /// verified registration goes on; the connection closes when it drains.
    pub(super) fn expire_close_bounds(&mut self, now: Now, out: &mut Outbox<Frame>) {
        while let Some(&(at, ctx, stream)) = self.close_bounds.first() {
            if at > now.mono {
                break;
            }
            self.close_bounds.pop_first();
            if let Some(a) = self.awaits.get_mut(&ctx) {
                a.drains.remove(&stream);
            }
            self.close_on_drain.insert(stream);
            self.pump(now, ctx, true, out);
        }
    }

    /// A connection ended under an awaited write to it: the write fails,
    /// the sweep's own PING or probe too (`drain()` raises the stored
    /// error). (A write still waiting for its lock tries when it has it,
    /// and the broken connection fails it then.)
    pub(super) fn fail_writes_to(&mut self, now: Now, stream: StreamId, out: &mut Outbox<Frame>) {
        let sweep = match &self.phase {
            Phase::Probing(s) => s
                .awaiting
                .filter(|a| a.started && a.stream == stream)
                .map(|a| a.token),
            _ => None,
        };
        if let Some(token) = sweep {
            let failed = Err(super::SendFailure::Net(
                heartsim_sim::SendError::ConnectionReset,
            ));
            self.on_send_done(now, token, failed, out);
        }
        let tokens: Vec<u64> = self
            .ng_writes
            .iter()
            .filter(|(_, w)| w.target == stream && w.started())
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

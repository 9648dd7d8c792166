//! joinmarket-ng HEAD's per-nick owner lock.
//!
//! `_owner_lock(peer_key)` (`server.py` ~435-440) is an `asyncio.Lock` per
//! nick. Three things take it:
//! - `_send_to_peer` (~654-682), for its whole write: the heartbeat's PINGs
//!   and `!orderbook` probes, every broadcast and relay write, the PONG
//!   `_handle_ping` sends. Its 30 s `wait_for` starts once the lock is had,
//!   and under it the owner is checked again: a write whose target left
//!   meanwhile raises `ValueError("Stale connection ...")` and writes
//!   nothing.
//! - `_register_peer` (~442-455): a handshake's registration (and its
//!   duplicate-nick check) waits for writes to the nick's current owner.
//! - `_remove_owned_peer_state` (~491-531): an eviction, a handler's
//!   cleanup after EOF, reset or a bad line, and `_handle_send_failed` all
//!   remove the owner under it, and do nothing if it is no longer the owner
//!   when they get it.
//!
//! `asyncio.Lock` wakes its waiters first in, first out, and a newcomer does
//! not jump a woken waiter (`acquire` checks `_waiters`). With room in the
//! buffers no write yields, so nobody ever waits: the lock matters only
//! behind a write blocked on full buffers. Then writes to one stalled peer
//! time out one after another, each after 30 s of its own, and whatever
//! else wants that nick waits behind them.
//!
//! The handshake's reply and HANDSHAKED update, and the verified path's
//! `ok` result, take the lock too, but nothing can be writing to a nick
//! that is not HANDSHAKED yet (`_safe_send` and `_send_to_peer` refuse it),
//! so they never wait and are not modelled here.

use std::collections::VecDeque;

use heartsim_sim::{Input, NodeId, Now, Outbox};

use super::awaits::{Ctx, Departure};
use super::{Authenticating, Directory, Features, KeyId, StreamId};
use crate::models::joinmarket::Frame;

/// What waits for a nick's lock.
#[derive(Debug)]
pub(super) enum Want {
    /// A write (`_send_to_peer`), by its token: a broadcast, relay or PONG
    /// write of a coroutine, or the sweep's own PING or probe.
    Write(u64),
    /// A coroutine's departure (`_remove_owned_peer_state`).
    Depart(Ctx, Box<Departure>),
    /// A handshake's `_register_peer`.
    Register(Box<Registering>),
    /// A verified registration after its proof (`_register_peer` with the
    /// pubkey).
    Verified(StreamId, Box<Authenticating>),
}

/// A handshake waiting in `_register_peer`: what it said.
#[derive(Debug)]
pub(super) struct Registering {
    pub(super) stream: StreamId,
    pub(super) from: NodeId,
    pub(super) nick: std::sync::Arc<str>,
    pub(super) location: std::sync::Arc<str>,
    pub(super) features: Features,
}

/// One nick's lock: the write holding it, and who waits, in order.
#[derive(Debug, Default)]
pub(super) struct OwnerLock {
    holder: Option<u64>,
    waiters: VecDeque<Want>,
}

/// What the one granted the lock does once out of it.
enum Then {
    Nothing,
    /// A coroutine goes on.
    Pump(Ctx),
    /// The sweep goes on.
    Probe,
    /// A handler reads what came while it waited.
    Read(Vec<Input<Frame>>),
}

impl Directory {
    /// Whether the lock is modelled: HEAD, with its awaited writes (a
    /// `broadcasts = false` scale run turns both off).
    pub(super) fn locks_on(&self) -> bool {
        self.profile.owner_lock() && self.broadcasts
    }

    /// Whether `key`'s lock is taken or waited for, by someone other than
    /// the one being granted it.
    pub(super) fn lock_busy(&self, key: KeyId) -> bool {
        self.locks_on() && self.granted != Some(key) && self.locks.contains_key(&key)
    }

    /// Queue for `key`'s lock.
    pub(super) fn lock_wait(&mut self, key: KeyId, want: Want) {
        self.locks.entry(key).or_default().waiters.push_back(want);
    }

    /// A write wants `key`'s lock: true if it may start now (it holds the
    /// lock, or there is none), false if it waits.
    pub(super) fn lock_write(&mut self, key: KeyId, token: u64) -> bool {
        if !self.locks_on() {
            return true;
        }
        if self.lock_busy(key) {
            self.lock_wait(key, Want::Write(token));
            return false;
        }
        self.locks.entry(key).or_default().holder = Some(token);
        true
    }

    /// The write `token` is over (done, failed, abandoned): `async with`
    /// releases the lock before the write's outcome reaches its caller, and
    /// the first waiter has it.
    pub(super) fn unlock(&mut self, now: Now, key: KeyId, token: u64, out: &mut Outbox<Frame>) {
        let Some(lock) = self.locks.get_mut(&key) else {
            return;
        };
        if lock.holder != Some(token) {
            return;
        }
        lock.holder = None;
        self.grant_next(now, key, out);
    }

    /// Hand `key`'s free lock to its waiters in order: a write keeps it; a
    /// registration or removal does its part and lets it go.
    fn grant_next(&mut self, now: Now, key: KeyId, out: &mut Outbox<Frame>) {
        loop {
            let Some(lock) = self.locks.get_mut(&key) else {
                return;
            };
            if lock.holder.is_some() {
                return;
            }
            let Some(want) = lock.waiters.pop_front() else {
                self.locks.remove(&key);
                return;
            };
            self.granted = Some(key);
            let then = self.granted_to(now, key, want, out);
            self.granted = None;
            match then {
                Then::Nothing => {}
                Then::Pump(ctx) => self.pump(now, ctx, true, out),
                Then::Probe => self.probe_next(now, out),
                Then::Read(held) => self.read_held(now, held, out),
            }
        }
    }

    /// What `want` does under the lock.
    fn granted_to(&mut self, now: Now, key: KeyId, want: Want, out: &mut Outbox<Frame>) -> Then {
        match want {
            Want::Write(token) => {
                if self.start_write(now, token, out) {
                    if let Some(lock) = self.locks.get_mut(&key) {
                        lock.holder = Some(token);
                    }
                    Then::Nothing
                } else if let Some(ctx) = self.stale_write(token) {
                    Then::Pump(ctx)
                } else {
                    self.stale_sweep_write(token);
                    Then::Probe
                }
            }
            Want::Depart(ctx, departure) => {
                self.depart_granted(ctx, *departure, out);
                Then::Pump(ctx)
            }
            Want::Register(r) => {
                let held = self.registering.remove(&r.stream).unwrap_or_default();
                let Registering {
                    stream,
                    from,
                    nick,
                    location,
                    features,
                } = *r;
                self.on_handshake(now, stream, from, &nick, &location, features, out);
                // Registered: the handler sleeps its 50 ms, then reads.
                if let Some(settling) = self.settling.get_mut(&stream) {
                    settling.held = held;
                }
                Then::Nothing
            }
            Want::Verified(stream, auth) => {
                let held = self.registering.remove(&stream).unwrap_or_default();
                self.on_proof(now, stream, *auth, out);
                if let Some(a) = self.reader_blocked(stream) {
                    a.held = held;
                    Then::Nothing
                } else if self.by_stream.contains_key(&stream) {
                    Then::Read(held)
                } else {
                    Then::Nothing
                }
            }
        }
    }

    /// Whether a connection is its key's HANDSHAKED owner: what
    /// `_send_to_peer` checks under the lock.
    pub(super) fn is_current(&self, id: super::ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            self.by_key.get(&c.key) == Some(&id) && self.idle_index.contains(&(c.last_seen, id))
        })
    }
}

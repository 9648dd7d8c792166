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
//!     if the input was Stop: return
//!     wait for the first of (in this priority when several are ready):
//!         a control message  -> Stop, or re-read the deadline (clock changed)
//!         a frame            -> Input::Recv { from, msg }
//!         poll_timeout()     -> Input::Timeout, slept until on the node's clock
//! }
//! ```
//!
//! Everything the machine does not own stays out here: the socket, the
//! clock, and the encoding (JSON via serde, one datagram per message).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{select_biased, FutureExt, StreamExt};
use madsim::net::Endpoint;
use madsim::time::{sleep_until, Instant};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::Clock;
use crate::engine::{LimitError, Output, Stats};
use crate::time::Timestamp;
use crate::trace::Trace;
use crate::{Dest, Input, Machine, NodeId, Outbox, SendError};

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
    pub unsupported: Mutex<Option<&'static str>>,
}

/// Why a machine that opens connections does not run here yet.
pub const STREAMS_UNSUPPORTED: &str =
    "connections (the stream medium is not carried on madsim's TcpStream yet)";

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
    let mut out = Outbox::new(io.node);
    let mut inputs = VecDeque::from([Input::Start]);
    let mut buf = vec![0u8; MAX_FRAME_BYTES];
    loop {
        let mut stopping = false;
        while let Some(input) = inputs.pop_front() {
            stopping |= matches!(input, Input::Stop);
            if !count_event(&io) {
                return;
            }
            let t = io.global_now();
            let now = lock(&io.clock).now(t);
            machine.handle(now, input, &mut out);
            for item in out.drain() {
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
                    Output::Send { .. }
                    | Output::Listen
                    | Output::Connect { .. }
                    | Output::Close(_)
                    | Output::Reset(_) => {
                        // The run reports it as unsupported; see
                        // `Shared::unsupported`.
                        lock(&io.shared.unsupported).get_or_insert(STREAMS_UNSUPPORTED);
                        return;
                    }
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

/// Count one input against the run's limit; false once any limit is hit.
fn count_event(io: &NodeIo) -> bool {
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

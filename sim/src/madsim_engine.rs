//! The madsim engine: the same machines, wrapped in the async
//! [`driver`](crate::driver), on a madsim `Runtime` (built only under
//! `--cfg madsim`). It is the second opinion on the main engine and the
//! place to run async heartbeat code as a user would deploy it.
//!
//! # Drive loop
//!
//! ```text
//! Runtime::with_seed_and_config(seed, { loss: network drop, latency: network latency })
//! block_on(supervisor):
//!     for each fault in (time, order) order: sleep until its time, then
//!         start      -> first time: build the madsim node (its init task is the
//!                       driver with a fresh machine) and clog it if a partition
//!                       covers it; later: Handle::restart
//!         restart    -> Handle::kill, then Handle::restart (a new machine)
//!         stop       -> Control::Stop to the driver (Input::Stop, then it returns)
//!         crash      -> Handle::kill (its sockets go with it; refused once a
//!                       connection was opened: peers would read end of stream)
//!         kill       -> Handle::kill (peers' connections read end of stream)
//!         partition  -> NetSim::clog_link for every blocked direction; heal unclogs
//!         pause/resume      -> Handle::pause / Handle::resume
//!         clock jump/drift  -> change the node's clock, Control::ClockChanged
//!         break/repair      -> the shared broken-link set the driver checks
//!     sleep until the end; dropping the runtime drops every node
//! ```
//!
//! What madsim cannot express is refused with
//! [`MadsimError::Unsupported`]: per-link configs, duplication, reordering,
//! held and stalled links; and, once a machine uses connections, loss,
//! partitions, `break`, crashes and connects to a host that is down
//! ([`unsupported_with_connections`], `docs/engines.md`, "Connections"). Where the two engines must differ even on
//! supported scenarios (madsim's socket jitter and its order of same-instant
//! tasks), see `docs/engines.md`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::{unbounded, UnboundedSender};
use madsim::net::{Endpoint, NetSim};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::sleep_until;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::driver::{drive, lock, refuse, AddressBook, Control, NodeIo, Shared};
use crate::engine::fault_record;
use crate::net::{Latency, LinkConfig};
use crate::time::Timestamp;
use crate::trace::{Level, Trace};
use crate::{Clock, Fault, LimitError, Limits, Machine, NodeId, NodeSpec, Stats};

/// Why a scenario did not run on madsim.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MadsimError {
    #[error("the madsim engine cannot run this scenario: {0}; run it on the main engine")]
    Unsupported(String),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// A run's world, as the main engine is given it.
#[derive(Clone, Debug)]
pub struct World {
    pub nodes: Vec<NodeSpec>,
    pub network: LinkConfig,
    /// Per-link overrides: allowed only where they equal `network`.
    pub links: Vec<(NodeId, NodeId, LinkConfig)>,
    pub faults: Vec<(Timestamp, Fault)>,
    pub limits: Limits,
    pub keep: Level,
    pub seed: u64,
}

/// Every node listens on this port of its own address.
const PORT: u16 = 7000;

fn addr_of(node: NodeId) -> SocketAddr {
    // 10.0.0.1, 10.0.0.2, ...: one address per node, never .0.
    let n = u32::try_from(node.0 + 1).expect("fewer than 2^24 nodes");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)), PORT)
}

/// What of `world` madsim cannot express, if anything.
pub fn unsupported(world: &World) -> Option<String> {
    let net = &world.network;
    if !net.duplicate.is_never() {
        return Some("duplication (madsim's network never copies a message)".into());
    }
    if !net.reorder.is_never() {
        return Some("reordering (madsim has one latency range for all links)".into());
    }
    if let Some((from, to, _)) = world.links.iter().find(|(_, _, c)| c != net) {
        return Some(format!(
            "a per-link config on node {} -> node {} (madsim's latency and loss are global)",
            from.0, to.0
        ));
    }
    if world.nodes.len() >= 1 << 24 {
        return Some("more than 2^24 nodes".into());
    }
    world.faults.iter().find_map(|(_, f)| match f {
        Fault::Link { .. } => Some("the link fault (madsim's latency and loss are global)".into()),
        Fault::Hold { .. } | Fault::Stall { .. } | Fault::Release { .. } => {
            Some("held and stalled links (madsim delivers or drops, never parks)".into())
        }
        _ => None,
    })
}

/// What of `world` madsim cannot express once a machine opens connections
/// (checked at the first connection operation, so that datagram-only runs
/// are unaffected). See `docs/engines.md`, "Connections", for the madsim
/// source each reason rests on. Two more are refused during the run:
/// [`CONNECT_TO_DOWN_HOST`](crate::driver::CONNECT_TO_DOWN_HOST) and
/// [`CRASH_WITH_CONNECTIONS`].
pub fn unsupported_with_connections(world: &World) -> Option<String> {
    if !world.network.drop.is_never() {
        return Some(
            "loss with connections: madsim's TCP never loses data; its reader retries a \
             lost segment after 1 ms, doubling to at most 10 s (madsim 0.2.34 \
             src/sim/net/mod.rs:385-399), where TCP waits an RTO of at least 200 ms, and \
             madsim refuses a connect whose one try is lost (mod.rs:351-354)"
                .into(),
        );
    }
    world.faults.iter().find_map(|(_, f)| match f {
        Fault::Partition(_) => Some(
            "partitions with connections: across a clogged link madsim refuses a connect \
             at once (madsim 0.2.34 src/sim/net/mod.rs:351-354) and holds data, retrying \
             after 1 ms doubling to at most 10 s and never giving up (mod.rs:385-399); TCP \
             retries a SYN for 127 s and data on its RTO grid, and gives up after 924.6 s"
                .into(),
        ),
        Fault::Break { .. } => Some(
            "the break fault with connections: the driver cannot drop one end of a madsim \
             stream without its peer reading end of stream"
                .into(),
        ),
        _ => None,
    })
}

/// Why a crash (or the reboot a restart of a running node is) fails a run
/// that uses connections.
pub const CRASH_WITH_CONNECTIONS: &str =
    "a crash (or a restart of a running node, which reboots it) while connections are in \
     use: madsim can only kill the node, which drops its streams, so its peers read end of \
     stream at once (madsim 0.2.34 src/sim/task/mod.rs:362-371, tcp/stream.rs:151-157); a \
     crashed host is silent, and its peers retransmit until a RST after the restart or \
     924.6 s";

fn madsim_config(net: &LinkConfig) -> madsim::Config {
    let mut config = madsim::Config::default();
    let (lo, hi) = match net.latency {
        Latency::Fixed(d) => (d, d),
        Latency::Uniform { lo, hi } => (lo, hi),
    };
    let lo = std::time::Duration::from_micros(lo.as_us());
    // madsim draws from `lo..hi` and panics on an empty range: a fixed
    // latency is `d..d + 1 ns`, which always draws `d`.
    let hi = std::time::Duration::from_micros(hi.as_us()) + std::time::Duration::from_nanos(1);
    config.net.send_latency = lo..hi;
    config.net.packet_loss_rate = net.drop.as_f64();
    config
}

/// Run `world` on madsim with a fresh machine from `factory` at every
/// (re)start. Returns the trace (decision records only: madsim's network
/// does not tell which messages it lost) and the counters.
pub fn run<M, F>(world: &World, factory: F) -> Result<(Trace, Stats), MadsimError>
where
    M: Machine + 'static,
    M::Msg: Serialize + DeserializeOwned,
    F: Fn(NodeId) -> M + Send + Sync + 'static,
{
    if let Some(what) = unsupported(world) {
        return Err(MadsimError::Unsupported(what));
    }
    let names: Vec<String> = world.nodes.iter().map(|n| n.name.clone()).collect();
    let shared = Arc::new(Shared {
        stream_refusal: unsupported_with_connections(world),
        ..Shared::new(
            Trace::new(names, world.keep),
            world.nodes.len(),
            world.limits.max_events,
        )
    });
    let runtime = Runtime::with_seed_and_config(world.seed, madsim_config(&world.network));
    let factory = Arc::new(factory);
    runtime.block_on(supervise(world.clone(), shared.clone(), factory));
    drop(runtime);
    if let Some(limit) = *lock(&shared.limit_hit) {
        return Err(limit.into());
    }
    if let Some(what) = lock(&shared.unsupported).take() {
        return Err(MadsimError::Unsupported(what));
    }
    let stats = *lock(&shared.stats);
    let trace = std::mem::replace(
        &mut *lock(&shared.trace),
        Trace::new(Vec::new(), world.keep),
    );
    Ok((trace, stats))
}

/// A scenario node as madsim sees it.
struct Slot {
    handle: Option<NodeHandle>,
    clock: Arc<Mutex<Clock>>,
    /// The running driver's control channel (replaced at every start).
    control: Arc<Mutex<Option<UnboundedSender<Control>>>>,
}

async fn supervise<M, F>(world: World, shared: Arc<Shared>, factory: Arc<F>)
where
    M: Machine + 'static,
    M::Msg: Serialize + DeserializeOwned,
    F: Fn(NodeId) -> M + Send + Sync + 'static,
{
    let handle = Handle::current();
    let net = NetSim::current();
    let epoch = madsim::time::TimeHandle::current().now_instant();
    let book = Arc::new(AddressBook::new(
        (0..world.nodes.len()).map(|i| addr_of(NodeId(i))).collect(),
    ));
    let mut slots: Vec<Slot> = world
        .nodes
        .iter()
        .map(|n| Slot {
            handle: None,
            clock: Arc::new(Mutex::new(n.clock)),
            control: Arc::new(Mutex::new(None)),
        })
        .collect();
    // Node starts first, so that at equal times a node starts before
    // anything scheduled after it (as the main engine queues them).
    let mut faults: Vec<(Timestamp, Fault)> = world
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.start_at.map(|t| (t, Fault::Start(NodeId(i)))))
        .chain(world.faults.iter().cloned())
        .collect();
    faults.sort_by_key(|(t, _)| *t); // stable: same-time faults keep their order
    let mut clogged: BTreeSet<(NodeId, NodeId)> = BTreeSet::new();
    // Whose process runs (a restart of a running node reboots its host).
    let mut running = vec![false; world.nodes.len()];
    let at = |t: Timestamp| epoch + std::time::Duration::from_micros(t.as_us());
    for (t, fault) in faults {
        if t > world.limits.end {
            break;
        }
        // madsim sleeps at least 1 ms even for a deadline that has come:
        // faults due at one time are applied together.
        if at(t) > madsim::time::TimeHandle::current().now_instant() {
            sleep_until(at(t)).await;
        }
        if lock(&shared.limit_hit).is_some() || lock(&shared.unsupported).is_some() {
            return;
        }
        let reboot = match &fault {
            Fault::Crash(_) => true,
            Fault::Restart(n) => running[n.0],
            _ => false,
        };
        if reboot && *lock(&shared.streams_used) {
            refuse(&shared, CRASH_WITH_CONNECTIONS.into());
            return;
        }
        {
            let mut trace = lock(&shared.trace);
            let record = fault_record(&fault, t, &trace);
            trace.push(record);
        }
        let madsim_id = |slots: &[Slot], n: NodeId| slots[n.0].handle.as_ref().map(NodeHandle::id);
        match fault {
            Fault::Start(n) | Fault::Restart(n) => {
                running[n.0] = true;
                lock(&shared.hosts_up)[n.0] = true;
                match madsim_id(&slots, n) {
                    None => {
                        let built = build_node(
                            &handle,
                            n,
                            &world.nodes[n.0].name,
                            &slots[n.0],
                            &book,
                            &shared,
                            epoch,
                            &factory,
                        );
                        slots[n.0].handle = Some(built);
                        // A partition made before this node existed in
                        // madsim covers it too (clogging is idempotent).
                        apply_clogs(&net, &slots, &clogged, true);
                    }
                    Some(id) => {
                        // Kill first: a restart alone keeps the old socket bound.
                        handle.kill(id);
                        handle.restart(id);
                    }
                }
            }
            Fault::Stop(n) => {
                running[n.0] = false;
                if let Some(tx) = lock(&slots[n.0].control).take() {
                    let _ = tx.unbounded_send(Control::Stop);
                }
            }
            // madsim can only kill a node: its tasks and sockets go, its
            // peers' streams read end of stream. For `kill` (the process
            // dies, the host stays up) that is what TCP does. A host that
            // dies is silent instead: without connections nobody can tell
            // the difference, and with them the run was refused above.
            Fault::Crash(n) | Fault::Kill(n) => {
                running[n.0] = false;
                if matches!(fault, Fault::Crash(_)) {
                    lock(&shared.hosts_up)[n.0] = false;
                }
                if let Some(id) = madsim_id(&slots, n) {
                    handle.kill(id);
                }
            }
            Fault::Pause(n) => {
                if let Some(id) = madsim_id(&slots, n) {
                    handle.pause(id);
                }
            }
            Fault::Resume(n) => {
                if let Some(id) = madsim_id(&slots, n) {
                    handle.resume(id);
                }
            }
            Fault::Partition(rules) => {
                for rule in &rules {
                    for &from in &rule.from {
                        for &to in &rule.to {
                            clogged.insert((from, to));
                        }
                    }
                }
                apply_clogs(&net, &slots, &clogged, true);
            }
            Fault::Heal => {
                apply_clogs(&net, &slots, &clogged, false);
                clogged.clear();
            }
            Fault::ClockJump { node, by_us } => {
                lock(&slots[node.0].clock).jump(by_us);
                clock_changed(&slots[node.0]);
            }
            Fault::ClockDrift { node, ppm } => {
                // Validated when the scenario was read.
                let changed = lock(&slots[node.0].clock).set_drift(t, ppm);
                debug_assert!(changed, "drift {ppm} out of range");
                clock_changed(&slots[node.0]);
            }
            Fault::Break { from, to } => {
                lock(&shared.broken).insert((from, to));
            }
            Fault::Repair { from, to } => {
                lock(&shared.broken).remove(&(from, to));
            }
            // Refused by `unsupported` before the run.
            Fault::Link { .. }
            | Fault::Hold { .. }
            | Fault::Stall { .. }
            | Fault::Release { .. } => {}
        }
    }
    sleep_until(at(world.limits.end)).await;
}

/// Clog (or unclog) every blocked direction between nodes madsim knows.
/// madsim ids exist only once a node is built, so a node first started
/// during a partition is clogged when it is built.
fn apply_clogs(net: &NetSim, slots: &[Slot], links: &BTreeSet<(NodeId, NodeId)>, clog: bool) {
    for &(from, to) in links {
        let (Some(a), Some(b)) = (&slots[from.0].handle, &slots[to.0].handle) else {
            continue;
        };
        if clog {
            net.clog_link(a.id(), b.id());
        } else {
            net.unclog_link(a.id(), b.id());
        }
    }
}

fn clock_changed(slot: &Slot) {
    if let Some(tx) = &*lock(&slot.control) {
        let _ = tx.unbounded_send(Control::ClockChanged);
    }
}

#[allow(clippy::too_many_arguments)]
fn build_node<M, F>(
    handle: &Handle,
    node: NodeId,
    name: &str,
    slot: &Slot,
    book: &Arc<AddressBook>,
    shared: &Arc<Shared>,
    epoch: madsim::time::Instant,
    factory: &Arc<F>,
) -> NodeHandle
where
    M: Machine + 'static,
    M::Msg: Serialize + DeserializeOwned,
    F: Fn(NodeId) -> M + Send + Sync + 'static,
{
    let (book, shared, factory) = (book.clone(), shared.clone(), factory.clone());
    let (clock, control) = (slot.clock.clone(), slot.control.clone());
    let addr = addr_of(node);
    handle
        .create_node()
        .name(name)
        .ip(addr.ip())
        .init(move || {
            // Every (re)start: a fresh machine and a fresh control channel.
            let (tx, rx) = unbounded();
            *lock(&control) = Some(tx);
            let machine = factory(node);
            let (book, shared, clock) = (book.clone(), shared.clone(), clock.clone());
            async move {
                let Ok(endpoint) = Endpoint::bind(addr).await else {
                    return; // cannot happen: a node's address is its own
                };
                let io = NodeIo {
                    node,
                    endpoint,
                    book,
                    clock,
                    epoch,
                    control: rx,
                    shared,
                };
                drive(machine, io).await;
            }
        })
        .build()
}

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
//!                       driver: a fresh kernel and machine) and clog it if a
//!                       partition covers it; after a crash: Handle::restart;
//!                       host up: Control::Start (a fresh machine, same kernel)
//!         restart    -> as start; of a running node: a reboot (kill, restart)
//!         stop       -> Control::Stop (Input::Stop, then the process is gone)
//!         kill       -> Control::Kill (the process is gone, the kernel stays:
//!                       FINs, then RSTs and refused connects)
//!         crash      -> Handle::kill: the host and its endpoint go (silence)
//!         partition  -> NetSim::clog_link for every blocked direction; heal unclogs
//!         pause/resume      -> Control::Pause / Control::Resume (the machine
//!                              only: the kernel keeps acknowledging)
//!         clock jump/drift  -> change the node's clock, Control::ClockChanged
//!         break/repair      -> the shared broken-link set the driver checks
//!     sleep until the end; dropping the runtime drops every node
//! ```
//!
//! Connections are the main engine's stream stack in each node's driver,
//! its packets madsim datagrams (`docs/engines.md`, "Connections"). What
//! madsim cannot express is refused with [`MadsimError::Unsupported`]:
//! per-link configs, duplication, reordering, held and stalled links.
//! Where the two engines must differ even on supported scenarios (madsim's
//! socket jitter and its order of same-instant tasks), see
//! `docs/engines.md`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::{unbounded, UnboundedSender};
use madsim::net::{Endpoint, NetSim};
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::time::sleep_until;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::driver::{drive, lock, AddressBook, Control, NodeIo, Shared};
use crate::engine::fault_record;
use crate::net::{Latency, LinkConfig};
use crate::time::Timestamp;
use crate::trace::{Level, Trace};
use crate::{Clock, Fault, LimitError, Limits, Machine, NodeId, NodeSpec, Stats, TcpConfig};

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
    /// The stream medium's constants (`[tcp]`).
    pub tcp: TcpConfig,
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
        Fault::PowerLoss { .. }
        | Fault::DiskError { .. }
        | Fault::SlowDisk { .. }
        | Fault::TornWrite { .. }
        | Fault::KillBeforeRename(_) => Some("the filesystem medium's faults".into()),
        _ => None,
    })
}

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
        tcp: world.tcp,
        ..Shared::new(Trace::new(names, world.keep), world.limits.max_events)
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
    /// The running driver's control channel (replaced at every boot).
    control: Arc<Mutex<Option<UnboundedSender<Control>>>>,
    /// The host is up (built, not crashed): its driver runs.
    host_up: bool,
    /// Its process runs (a restart of a running node reboots its host).
    running: bool,
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
            host_up: false,
            running: false,
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
        {
            let mut trace = lock(&shared.trace);
            let record = fault_record(&fault, t, &trace);
            trace.push(record);
        }
        match fault {
            Fault::Start(n) | Fault::Restart(n) => {
                let reboot = matches!(fault, Fault::Restart(_)) && slots[n.0].running;
                let slot = &mut slots[n.0];
                slot.running = true;
                match slot.handle.as_ref().map(NodeHandle::id) {
                    None => {
                        let built = build_node(
                            &handle,
                            n,
                            &world.nodes[n.0].name,
                            slot,
                            &book,
                            &shared,
                            epoch,
                            &factory,
                        );
                        slot.handle = Some(built);
                        slot.host_up = true;
                        // A partition made before this node existed in
                        // madsim covers it too (clogging is idempotent).
                        apply_clogs(&net, &slots, &clogged, true);
                    }
                    // The host is down, or a running node is rebooted: a
                    // fresh driver, with an empty kernel (peers' packets on
                    // old connections are answered with RST). Kill first:
                    // a restart alone keeps the old socket bound.
                    Some(id) if reboot || !slot.host_up => {
                        slot.host_up = true;
                        handle.kill(id);
                        handle.restart(id);
                    }
                    // The host is up: a fresh process on it.
                    Some(_) => control(slot, Control::Start),
                }
            }
            Fault::Stop(n) => {
                slots[n.0].running = false;
                control(&slots[n.0], Control::Stop);
            }
            Fault::Kill(n) => {
                slots[n.0].running = false;
                control(&slots[n.0], Control::Kill);
            }
            // The host dies: its tasks and its endpoint go, so what is
            // sent to it is lost (madsim 0.2.34 src/sim/task/mod.rs:362-371,
            // src/sim/net/network.rs:142-147).
            Fault::Crash(n) => {
                let slot = &mut slots[n.0];
                slot.running = false;
                slot.host_up = false;
                if let Some(h) = &slot.handle {
                    handle.kill(h.id());
                }
            }
            Fault::Pause(n) => control(&slots[n.0], Control::Pause),
            Fault::Resume(n) => control(&slots[n.0], Control::Resume),
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
                control(&slots[node.0], Control::ClockChanged);
            }
            Fault::ClockDrift { node, ppm } => {
                // Validated when the scenario was read.
                let changed = lock(&slots[node.0].clock).set_drift(t, ppm);
                debug_assert!(changed, "drift {ppm} out of range");
                control(&slots[node.0], Control::ClockChanged);
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
            | Fault::Release { .. }
            | Fault::PowerLoss { .. }
            | Fault::DiskError { .. }
            | Fault::SlowDisk { .. }
            | Fault::TornWrite { .. }
            | Fault::KillBeforeRename(_) => {}
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

/// Tell the node's driver (if its host is up).
fn control(slot: &Slot, what: Control) {
    if !slot.host_up {
        return;
    }
    if let Some(tx) = &*lock(&slot.control) {
        let _ = tx.unbounded_send(what);
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
            // Every boot: a fresh driver (kernel and machine) and a fresh
            // control channel.
            let (tx, rx) = unbounded();
            *lock(&control) = Some(tx);
            let (book, shared, clock) = (book.clone(), shared.clone(), clock.clone());
            let factory = factory.clone();
            async move {
                let Ok(endpoint) = Endpoint::bind(addr).await else {
                    return; // cannot happen: a node's address is its own
                };
                let io = NodeIo {
                    node,
                    endpoint: Arc::new(endpoint),
                    book,
                    clock,
                    epoch,
                    control: rx,
                    shared,
                };
                drive(move || factory(node), io).await;
            }
        })
        .build()
}

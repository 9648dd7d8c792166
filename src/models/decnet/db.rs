//! The master's database: `SwarmHost`, `DeckyLifecycle`, `DeckyShard` and
//! topology rows, kept as one file on the master host's disk (DECNET's
//! default SQLite database), which swarmctl and the main API share. A
//! transaction is a read of the file, a change and a write of it: with the
//! disk's default write time of zero the read's answer comes before any
//! other event, so transactions do not interleave (a slow disk could
//! interleave them, which SQLite would not).
//!
//! Every change to a row is a decision record ([`record_changes`]), so a
//! trace shows what the database holds.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use heartsim_sim::{FileDone, FileOp, NodeId, Outbox, Timestamp};
use serde::{Deserialize, Serialize};

use super::kind;
use super::msg::{Body, Cert, Delta, Json, Msg};

/// The database file.
pub const DB_PATH: &str = "/var/lib/decnet/decnet.db";

/// Lifecycle rows still open (`find_open_lifecycle`, `sweep_stale_lifecycle`:
/// `status.in_(("pending", "running"))`, `decky_lifecycle.py` l. 78, 97).
const OPEN: [&str; 2] = ["pending", "running"];
/// `_TERMINAL` (`decky_lifecycle.py` l. 20).
const TERMINAL: [&str; 2] = ["succeeded", "failed"];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Db {
    /// `SwarmHost` by uuid.
    pub hosts: BTreeMap<String, HostRow>,
    /// `DeckyLifecycle` by id (ids in creation order).
    pub lifecycle: BTreeMap<u64, LifecycleRow>,
    /// `DeckyShard` by decky name (`upsert_decky_shard` matches the name
    /// alone, `sqlmodel_repo/deckies.py` l. 26).
    pub shards: BTreeMap<String, ShardRow>,
    /// Active topologies by id.
    pub topologies: BTreeMap<String, TopologyRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    pub name: String,
    /// `client_cert_fingerprint`.
    pub fingerprint: String,
    /// enrolled | active | unreachable.
    pub status: String,
    /// Master wall clock, microseconds.
    pub last_heartbeat: Option<u64>,
    /// The agent's node (its `address`); `None`: no address yet, the probe
    /// skips it (`api_list_hosts.py` l. 35-36).
    pub address: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRow {
    pub decky: String,
    pub operation: String,
    pub host: String,
    pub status: String,
    pub started_at: u64,
    pub completed_at: Option<u64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRow {
    pub host: String,
    /// running | degraded.
    pub state: String,
    pub last_seen: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyRow {
    pub host: String,
    /// `canonical_hash(hydrate(..))` of what the master holds.
    pub hash: String,
    pub needs_resync: bool,
}

fn ts(us: u64) -> Timestamp {
    Timestamp::from_us(us)
}

impl Db {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the database serializes")
    }

    pub fn decode(bytes: &[u8]) -> Option<Db> {
        serde_json::from_slice(bytes).ok()
    }

    /// `POST /swarm/heartbeat` (`api_heartbeat.py` l. 235-276), after TLS:
    /// the status and detail it answers. `now` is the master's wall clock.
    pub fn heartbeat(&mut self, now: u64, cert: &Cert, body: &Body) -> (u16, &'static str) {
        // FastAPI validates `HeartbeatRequest` (l. 37-46) before the
        // handler runs: 422 comes before any lookup.
        let Body::Object {
            host_uuid: Some(Json::Str(uuid)),
            status: Some(Json::Status(status)),
            topology,
            lifecycle,
            ..
        } = body
        else {
            return (422, "request body validation error");
        };
        // `_verify_peer_matches_host` (l. 61-73): 404, then 403.
        let Some(host) = self.hosts.get_mut(&**uuid) else {
            return (404, "unknown host");
        };
        let fp = match cert {
            Cert::None => return (403, "peer cert unavailable"),
            Cert::Signed(f) | Cert::Untrusted(f) => f,
        };
        // `_peer_fingerprint_from_transport` takes `hexdigest().lower()`
        // (`web/_mtls.py:120`) and l. 70-72 compares it with the stored
        // fingerprint `.lower()`. Both digests are lowercase hex already
        // (`swarm/pki.py:72`), so upstream's comparison is exact; the
        // certificate names that stand for them here compare exactly too
        // (lowercasing one side refused every name with a capital).
        if host.fingerprint.is_empty() || **fp != *host.fingerprint {
            return (403, "cert fingerprint mismatch");
        }
        // l. 242-246: the master's clock at receipt.
        host.status = "active".into();
        host.last_heartbeat = Some(now);
        self.reconcile_topology(uuid, topology.as_ref());
        for delta in lifecycle.iter().flatten() {
            self.apply_delta(now, uuid, delta);
        }
        // l. 251-276: shards only when `status.deployed`.
        if status.deployed {
            for (name, running) in &status.deckies {
                self.shards.insert(
                    name.to_string(),
                    ShardRow {
                        host: uuid.to_string(),
                        state: if *running { "running" } else { "degraded" }.into(),
                        last_seen: now,
                    },
                );
            }
        }
        (204, "")
    }

    /// `_reconcile_topology_report` (l. 76-137): flag each active topology
    /// pinned here, not flagged yet, unless the agent reports its id with
    /// the same hash.
    fn reconcile_topology(&mut self, uuid: &str, reported: Option<&super::msg::Topology>) {
        for (id, topo) in &mut self.topologies {
            if topo.host != uuid || topo.needs_resync {
                continue;
            }
            if reported
                .is_some_and(|r| *r.id == **id && !r.hash.is_empty() && *r.hash == *topo.hash)
            {
                continue;
            }
            topo.needs_resync = true;
        }
    }

    /// `_apply_lifecycle_deltas` (l. 140-221).
    fn apply_delta(&mut self, now: u64, uuid: &str, delta: &Delta) {
        // l. 172: only these three.
        if !["running", "succeeded", "failed"].contains(&&*delta.status) {
            return;
        }
        // `find_open_lifecycle`: open, same decky/operation/host, newest
        // `started_at` first (`decky_lifecycle.py` l. 74-86); ties: the
        // database's order, here the lower id.
        let Some((_, row)) = self
            .lifecycle
            .iter_mut()
            .filter(|(_, r)| {
                r.decky == *delta.decky
                    && r.operation == *delta.operation
                    && r.host == uuid
                    && OPEN.contains(&r.status.as_str())
            })
            .max_by_key(|(id, r)| (r.started_at, std::cmp::Reverse(**id)))
        else {
            return;
        };
        row.status = delta.status.to_string();
        if let Some(e) = &delta.error {
            // l. 197: `str(delta["error"])[:2000]`.
            row.error = Some(e.chars().take(2000).collect());
        }
        if let Some(at) = delta.completed_at_us {
            row.completed_at = Some(at);
        } else if TERMINAL.contains(&&*delta.status) {
            // `update_lifecycle` l. 45-46.
            row.completed_at = Some(now);
        }
    }

    /// The main API's startup sweep (`decnet/web/api.py` l. 138-147,
    /// `sweep_stale_lifecycle`, `decky_lifecycle.py` l. 88-107).
    pub fn sweep(&mut self, now: u64) {
        let cutoff = now.saturating_sub(3_600_000_000);
        for row in self.lifecycle.values_mut() {
            if OPEN.contains(&row.status.as_str()) && row.started_at < cutoff {
                row.status = "failed".into();
                row.error = Some("master restarted during operation".into());
                row.completed_at = Some(now);
            }
        }
    }

    /// A new lifecycle row (`create_lifecycle`, `decky_lifecycle.py`
    /// l. 26-36), marked running on dispatch (`SwarmDeployStrategy`,
    /// `lifecycle/strategies.py` l. 206-216). Its id.
    pub fn open_lifecycle(&mut self, now: u64, decky: &str, operation: &str, host: &str) -> u64 {
        let id = self.lifecycle.keys().next_back().map_or(1, |k| k + 1);
        self.lifecycle.insert(
            id,
            LifecycleRow {
                decky: decky.into(),
                operation: operation.into(),
                host: host.into(),
                status: "running".into(),
                started_at: now,
                completed_at: None,
                error: None,
            },
        );
        id
    }
}

/// Record every row that differs between `old` and `new`.
pub fn record_changes(old: &Db, new: &Db, out: &mut Outbox<Msg>) {
    let agent = |a: Option<usize>| a.map(NodeId);
    for (uuid, row) in &new.hosts {
        if old.hosts.get(uuid) != Some(row) {
            let mut msg = format!("uuid={uuid} name={}", row.name);
            if let Some(t) = row.last_heartbeat {
                let _ = write!(msg, " last_heartbeat={}", ts(t));
            }
            out.record(
                kind::HOST_ROW,
                agent(row.address),
                Some(Cow::Owned(row.status.clone())),
                Some(msg.into()),
            );
        }
    }
    for (uuid, row) in &old.hosts {
        if !new.hosts.contains_key(uuid) {
            out.record(
                kind::HOST_ROW,
                agent(row.address),
                Some("deleted".into()),
                Some(format!("uuid={uuid} name={}", row.name).into()),
            );
        }
    }
    for (id, row) in &new.lifecycle {
        if old.lifecycle.get(id) != Some(row) {
            let mut msg = format!(
                "id={id} decky={} operation={} host={} started_at={}",
                row.decky,
                row.operation,
                row.host,
                ts(row.started_at)
            );
            if let Some(t) = row.completed_at {
                let _ = write!(msg, " completed_at={}", ts(t));
            }
            if let Some(e) = &row.error {
                let _ = write!(msg, " error={:?}", e.chars().take(60).collect::<String>());
            }
            out.record(
                kind::LIFECYCLE_ROW,
                None,
                Some(Cow::Owned(row.status.clone())),
                Some(msg.into()),
            );
        }
    }
    for (name, row) in &new.shards {
        if old.shards.get(name) != Some(row) {
            let msg = format!(
                "decky={name} host={} last_seen={}",
                row.host,
                ts(row.last_seen)
            );
            out.record(
                kind::SHARD_ROW,
                None,
                Some(Cow::Owned(row.state.clone())),
                Some(msg.into()),
            );
        }
    }
    for name in old.shards.keys() {
        if !new.shards.contains_key(name) {
            out.record(
                kind::SHARD_ROW,
                None,
                Some("deleted".into()),
                Some(format!("decky={name}").into()),
            );
        }
    }
    for (id, row) in &new.topologies {
        if row.needs_resync && !old.topologies.get(id).is_some_and(|o| o.needs_resync) {
            out.record(
                kind::RESYNC,
                None,
                Some("needs_resync".into()),
                Some(format!("topology={id} host={}", row.host).into()),
            );
        }
    }
}

/// A process's access to the database file: transactions queue, one at a
/// time (read, change, write).
#[derive(Clone, Debug)]
pub struct Access<J> {
    queue: VecDeque<J>,
    reading: bool,
}

/// File operation tokens: reads and writes of the database.
const READ: u64 = 1;
const WRITE: u64 = 2;

impl<J> Default for Access<J> {
    fn default() -> Self {
        Access {
            queue: VecDeque::new(),
            reading: false,
        }
    }
}

impl<J> Access<J> {
    /// The database's directory, made when the process starts.
    pub fn mkdir(out: &mut Outbox<Msg>) {
        out.file(FileOp::MkdirAll("/var/lib/decnet".into()), WRITE);
    }

    /// Queue a transaction; it runs when the file's content comes back.
    pub fn begin(&mut self, job: J, out: &mut Outbox<Msg>) {
        self.queue.push_back(job);
        if !self.reading {
            self.reading = true;
            out.file(FileOp::Read(DB_PATH.into()), READ);
        }
    }

    /// Queue a transaction from inside one: it reads the database once
    /// this one's commit has written it.
    pub fn defer(&mut self, job: J) {
        self.queue.push_back(job);
    }

    /// A file answer: the next transaction and the database it reads
    /// (`initial` when the file does not exist yet), or `None` for a
    /// write's answer.
    pub fn on_file(&mut self, done: &FileDone, initial: &Db) -> Option<(J, Db)> {
        if done.token != READ {
            return None;
        }
        self.reading = false;
        let job = self.queue.pop_front()?;
        let db = match &done.result {
            Ok(Some(bytes)) => Db::decode(bytes).unwrap_or_else(|| initial.clone()),
            _ => initial.clone(),
        };
        Some((job, db))
    }

    /// Write the changed database back, record what changed, and start the
    /// next queued transaction.
    pub fn commit(&mut self, old: &Db, new: &Db, out: &mut Outbox<Msg>) {
        if old != new {
            out.file(
                FileOp::Write {
                    path: DB_PATH.into(),
                    data: new.encode(),
                },
                WRITE,
            );
            record_changes(old, new, out);
        }
        if !self.queue.is_empty() && !self.reading {
            self.reading = true;
            out.file(FileOp::Read(DB_PATH.into()), READ);
        }
    }
}

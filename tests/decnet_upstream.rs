//! DECNET's points, each checked so that a model off by one step or one
//! comparison fails: the agent loop and httpx's timeouts through small
//! scenarios on the engine, the master's handler and sweep on the
//! database directly. Upstream: DECNET v1.0.0 (36353026), httpx 0.28.1,
//! httpcore 1.0.9; line numbers in docs/models/decnet.md.

use std::path::Path;
use std::sync::Arc;

use heartsim::models::decnet::db::{Db, HostRow, LifecycleRow, TopologyRow};
use heartsim::models::decnet::msg::{Body, Cert, Delta, Json, Status, Topology};
use heartsim::models::ALL;
use heartsim::run::run;
use heartsim::scenario::Scenario;
use heartsim_sim::trace::Level;

/// Run a decnet scenario (master `m` on host `master`, then `nodes`) and
/// give its decisions as `time node kind reason` lines.
fn decisions(latency: &str, duration: &str, nodes: &str) -> Vec<String> {
    decisions_with(latency, duration, nodes, false)
}

/// [`decisions`], each line ending with the record's `msg`.
fn decisions_msg(latency: &str, duration: &str, nodes: &str) -> Vec<String> {
    decisions_with(latency, duration, nodes, true)
}

fn decisions_with(latency: &str, duration: &str, nodes: &str, with_msg: bool) -> Vec<String> {
    let text = format!(
        r#"
version = 1
[scenario]
name = "upstream point"
model = "decnet"
profile = "decnet-1.0.0"
duration = "{duration}"
[network]
latency = "{latency}"
[[host]]
name = "master"
[[node]]
name = "m"
kind = "swarmctl"
host = "master"
{nodes}
"#
    );
    let s = Scenario::parse(ALL, Path::new("decnet.toml"), &text).expect("valid scenario");
    let t = run(&s, None, Level::Decision).expect("within limits").trace;
    t.decisions()
        .map(|r| {
            let line = format!(
                "{} {} {} {}",
                r.t,
                t.node_name(r.node),
                r.kind,
                r.reason.as_deref().unwrap_or("")
            );
            match (with_msg, r.msg.as_deref()) {
                (true, Some(msg)) => format!("{line} {msg}"),
                _ => line,
            }
        })
        .collect()
}

fn having<'a>(lines: &'a [String], pat: &str) -> Vec<&'a str> {
    lines
        .iter()
        .map(String::as_str)
        .filter(|l| l.contains(pat))
        .collect()
}

/// `_loop`: tick then `sleep(30)` (heartbeat.py l. 101-108): the first POST
/// at once, the next 30 s after the previous tick *ended* (here a 250 ms
/// body build on a zero-latency link).
#[test]
fn first_post_at_once_then_30s_after_the_tick_ended() {
    let d = decisions(
        "0ms",
        "65s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\ntick_time = \"250ms\"\n",
    );
    assert_eq!(
        having(&d, "a1 beat "),
        [
            "0:00:00.250 a1 beat 204",
            "0:00:30.500 a1 beat 204",
            "0:01:00.750 a1 beat 204"
        ]
    );
}

/// Only 204 is quiet (l. 89); a 403 is logged and the loop keeps its 30 s
/// period: no backoff, no jitter.
#[test]
fn rejected_beats_keep_the_period() {
    let d = decisions(
        "0ms",
        "95s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\ncertificate = \"a2\"\n",
    );
    assert_eq!(
        having(&d, "beat-rejected"),
        [
            "0:00:00.000 a1 beat-rejected 403",
            "0:00:30.000 a1 beat-rejected 403",
            "0:01:00.000 a1 beat-rejected 403",
            "0:01:30.000 a1 beat-rejected 403"
        ]
    );
}

/// Fingerprints are lowercase hex on both sides (`swarm/pki.py:72`,
/// `web/_mtls.py:120`; compared at `api_heartbeat.py:70-72`), so the
/// agent's own certificate always matches its row: a name with capitals
/// (the model's stand-in for a digest) is accepted by the heartbeat and by
/// the probe's pin alike (session 8 audit N1: the heartbeat lowercased
/// only the stored side and refused it).
#[test]
fn a_certificate_name_with_capitals_matches_its_own_row() {
    let d = decisions(
        "10ms",
        "70s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
probe_every = "1m"
[[node]]
name = "Worker1"
kind = "agent"
"#,
    );
    assert_eq!(
        having(&d, "Worker1 beat"),
        [
            "0:00:00.060 Worker1 beat 204",
            "0:00:30.120 Worker1 beat 204",
            "0:01:00.180 Worker1 beat 204"
        ],
        "{d:#?}"
    );
    assert_eq!(
        having(&d, "api probe"),
        ["0:01:00.100 api probe ok"],
        "{d:#?}"
    );
}

/// The agent's state moves with its operations (session 8 audit N2):
/// `deploy` saves the config before `compose up` (`engine/deployer.py`
/// l. 689 vs 708-726), so the next beat reports the decky deployed but not
/// running (a `degraded` shard) and the push after `compose up` reports it
/// running; `mutate_async` on an agent with no saved state fails at once
/// (`executor.py` l. 147-153), not after the operation's time; a
/// self-destruct clears the state (l. 256-258).
#[test]
fn operations_change_what_the_agent_reports() {
    let d = decisions_msg(
        "10ms",
        "3m",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
actions = [
  { at = "1m", action = "mutate", host_uuid = "a1", decky = "d1" },
  { at = "1m30s", action = "deploy", host_uuid = "a2", decky = "d2" },
  { at = "2m10s", action = "mutate", host_uuid = "a2", decky = "d9" },
]
[[node]]
name = "a1"
kind = "agent"
operation_time = "20s"
[[node]]
name = "a2"
kind = "agent"
operation_time = "20s"
"#,
    );
    let rows = having(&d, "lifecycle-row failed");
    assert_eq!(rows.len(), 2, "{d:#?}");
    assert!(
        rows[0].starts_with("0:01:00.140 m lifecycle-row failed")
            && rows[0].contains("completed_at=0:01:00.090")
            && rows[0].ends_with("error=\"no active deployment on this worker\""),
        "{rows:?}"
    );
    assert!(
        rows[1].contains("decky=d9")
            && rows[1].ends_with("error=\"decky 'd9' not found in worker state\""),
        "{rows:?}"
    );
    let shards = having(&d, "shard-row");
    assert!(
        shards[0].starts_with("0:01:30.230 m shard-row degraded decky=d2 host=a2"),
        "{shards:?}"
    );
    assert!(
        shards[1].starts_with("0:01:50.140 m shard-row running decky=d2 host=a2"),
        "{shards:?}"
    );
    assert!(!shards.iter().any(|l| l.contains("host=a1")), "{shards:?}");
}

/// A process not started yet on a host that runs others is refused at
/// once (a UNIX socket nobody serves), not silent as a host that is down:
/// the main API's `bus.connect()` to a bus daemon that starts 10 s late
/// fails one round trip after it began (the differential oracle's case
/// 2026112720-65; before, the SYN went unanswered).
#[test]
fn a_bus_not_started_on_a_live_host_refuses_at_once() {
    let d = decisions(
        "10ms",
        "15s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
[[node]]
name = "bus"
kind = "bus"
host = "master"
start = "10s"
"#,
    );
    assert_eq!(
        having(&d, "api bus"),
        ["0:00:00.020 api bus unavailable"],
        "{d:#?}"
    );
}

/// `_build_body` reads `executor.status()` first (`heartbeat.py` l. 59):
/// a deploy that starts while a tick's body is being built shows only in
/// the next beat; and a successful mutate's `compose up -d` of the whole
/// project (`executor.py` l. 161-168) brings every decky up (session 8's
/// second DECNET audit, points 1 and 2).
#[test]
fn status_is_read_as_the_build_begins_and_a_mutate_brings_every_decky_up() {
    let d = decisions_msg(
        "10ms",
        "70s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
actions = [{ at = "30300ms", action = "deploy", host_uuid = "a1", decky = "d1" }]
[[node]]
name = "a1"
kind = "agent"
tick_time = "200ms"
operation_time = "5m"
"#,
    );
    let shards = having(&d, "shard-row");
    assert!(
        shards[0].starts_with("0:01:00.770 m shard-row degraded decky=d1"),
        "{shards:?}"
    );
    let d = decisions_msg(
        "10ms",
        "40s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
actions = [{ at = "10s", action = "mutate", host_uuid = "a1", decky = "e" }]
[[node]]
name = "a1"
kind = "agent"
deployed = true
deckies = ["d"]
degraded = ["e"]
operation_time = "20s"
"#,
    );
    let e = having(&d, "shard-row");
    let e: Vec<_> = e.iter().filter(|l| l.contains("decky=e")).collect();
    assert!(
        e.iter()
            .any(|l| l.starts_with("0:00:30.110 m shard-row degraded")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.starts_with("0:00:30.140 m shard-row running")),
        "{e:?}"
    );
}

/// `save_state` writes a file (`decnet/config.py` l. 136-141) that
/// outlives the agent's process: a deploy interrupted by a stop leaves
/// the decky saved and not running, and the restarted agent reports it
/// `degraded`, not the scenario's starting `running` (the differential
/// oracle's seed 2026112774, case 386).
#[test]
fn the_saved_state_survives_a_restart_of_the_agent() {
    let d = decisions_msg(
        "10ms",
        "100s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
actions = [{ at = "10s", action = "deploy", host_uuid = "a1", decky = "d" }]
[[node]]
name = "a1"
kind = "agent"
deployed = true
deckies = ["d"]
operation_time = "1h"
[[fault]]
at = "40s"
kind = "stop"
node = "a1"
[[fault]]
at = "50s"
kind = "start"
node = "a1"
"#,
    );
    let shards = having(&d, "shard-row");
    let after: Vec<_> = shards.iter().filter(|l| **l > "0:00:50").collect();
    assert!(!after.is_empty(), "{shards:?}");
    assert!(
        after
            .iter()
            .all(|l| l.contains("shard-row degraded decky=d")),
        "{after:?}"
    );
}

/// `connect` bounds `connect_tcp` and then, afresh, `start_tls`
/// (connection.py l. 106-155): a master whose kernel accepts but whose
/// process is paused gives ConnectTimeout 5 s after the TCP connect
/// completed (0.020), not 5 s after it began.
#[test]
fn connect_timeout_applies_to_tcp_and_again_to_tls() {
    let d = decisions(
        "10ms",
        "20s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\n[[fault]]\nat = \"0s\"\nkind = \"pause\"\nnode = \"m\"\n",
    );
    assert_eq!(
        having(&d, "beat-failed"),
        ["0:00:05.020 a1 beat-failed ConnectTimeout"]
    );
}

/// An unanswered SYN: ConnectTimeout at 5 s (SYNs at 0, 1, 3 s), not the
/// kernel's 127 s.
#[test]
fn unanswered_syn_times_out_at_5s() {
    let d = decisions(
        "10ms",
        "20s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\n[[fault]]\nat = \"0s\"\nkind = \"partition\"\ngroups = [[\"m\"], [\"a1\"]]\n",
    );
    assert_eq!(
        having(&d, "beat-failed"),
        ["0:00:05.000 a1 beat-failed ConnectTimeout"]
    );
}

/// The read timer (10 s) starts once the request is written (0.040): a
/// master paused after sending its TLS flight (0.030) gives ReadTimeout at
/// 10.040; the loop then sleeps 30 s.
#[test]
fn read_timeout_10s_after_the_request() {
    let d = decisions(
        "10ms",
        "50s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\n[[fault]]\nat = \"35ms\"\nkind = \"pause\"\nnode = \"m\"\n",
    );
    // The next tick (40.040) connects (the paused master's kernel answers)
    // and its TLS handshake times out 5 s after the connect: 45.060.
    assert_eq!(
        having(&d, "beat-failed"),
        [
            "0:00:10.040 a1 beat-failed ReadTimeout",
            "0:00:45.060 a1 beat-failed ConnectTimeout"
        ]
    );
}

/// A FIN before the response is RemoteProtocolError ("Server disconnected
/// without sending a response.", http11.py l. 228-231); a RST is ReadError
/// (anyio.py l. 26-31); a refused SYN is ConnectError: distinct exceptions.
/// A master killed while the request is on its way (sent 0.040, killed
/// 0.045) closes with a FIN, which reaches the agent (0.055) before the
/// RST its request draws. One killed while paused with the request unread
/// resets instead (Linux `__tcp_close`, "Unread data was tossed").
#[test]
fn fin_reset_and_refused_are_distinct_errors() {
    let killed = decisions(
        "10ms",
        "20s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\n[[fault]]\nat = \"45ms\"\nkind = \"kill\"\nnode = \"m\"\n",
    );
    assert_eq!(
        having(&killed, "beat-failed"),
        ["0:00:00.055 a1 beat-failed RemoteProtocolError"]
    );
    let killed_unread = decisions(
        "10ms",
        "20s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\n[[fault]]\nat = \"35ms\"\nkind = \"pause\"\nnode = \"m\"\n[[fault]]\nat = \"1s\"\nkind = \"kill\"\nnode = \"m\"\n",
    );
    assert_eq!(
        having(&killed_unread, "beat-failed"),
        ["0:00:01.010 a1 beat-failed ReadError"]
    );
    let crashed = decisions(
        "10ms",
        "20s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\n[[fault]]\nat = \"35ms\"\nkind = \"crash\"\nnode = \"m\"\n[[fault]]\nat = \"1s\"\nkind = \"restart\"\nnode = \"m\"\n",
    );
    let failed = having(&crashed, "beat-failed");
    assert_eq!(failed.len(), 1, "{crashed:#?}");
    assert!(
        failed[0].ends_with("a1 beat-failed ReadError"),
        "{failed:?}"
    );
    let refused = decisions(
        "10ms",
        "20s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\nstart = \"1s\"\n[[fault]]\nat = \"0s\"\nkind = \"kill\"\nnode = \"m\"\n",
    );
    assert_eq!(
        having(&refused, "beat-failed"),
        ["0:00:01.020 a1 beat-failed ConnectError"]
    );
}

/// A broken request write is never `WriteError`: httpcore swallows it
/// (`http11.py` l. 82-95, `except WriteError: ... pass`) and reads, which
/// fails on the dead connection: `ReadError` (`_backends/anyio.py`
/// l. 26-31), at the instant of the write (0.040, after the master's TLS
/// flight).
#[test]
fn broken_write_is_a_read_error() {
    let d = decisions(
        "10ms",
        "20s",
        "[[node]]\nname = \"a1\"\nkind = \"agent\"\n[[fault]]\nat = \"30ms\"\nkind = \"break\"\nfrom = \"a1\"\nto = \"m\"\n",
    );
    assert_eq!(
        having(&d, "beat-failed"),
        ["0:00:00.040 a1 beat-failed ReadError"]
    );
}

/// A client certificate refused in the handshake shows on the first read
/// as a raw `ssl.SSLError`: anyio re-raises it (`anyio/streams/tls.py`
/// l. 197-208), httpcore's read map lacks it (`_backends/anyio.py`
/// l. 25-31), httpx re-raises it unmapped (`default.py` l. 114-115).
#[test]
fn refused_client_certificate_is_a_raw_ssl_error() {
    let d = decisions(
        "10ms",
        "5s",
        "[[node]]\nname = \"x\"\nkind = \"impostor\"\nhost_uuid = \"a1\"\ncertificate = \"none\"\ninterval = \"10s\"\n",
    );
    assert_eq!(
        having(&d, "beat-failed"),
        ["0:00:00.060 x beat-failed SSLError"]
    );
}

/// `keepalive_expiry` 5 s < 30 s: every tick opens its own connection.
#[test]
fn every_tick_opens_a_new_connection() {
    let text = r#"
version = 1
[scenario]
name = "keepalive"
model = "decnet"
profile = "decnet-1.0.0"
duration = "100s"
[[host]]
name = "master"
[[node]]
name = "m"
kind = "swarmctl"
host = "master"
[[node]]
name = "a1"
kind = "agent"
"#;
    let s = Scenario::parse(ALL, Path::new("k.toml"), text).expect("valid");
    let t = run(&s, None, Level::Net).expect("runs").trace;
    let connects = t
        .records()
        .filter(|r| r.kind == "connect" && t.node_name(r.node) == "a1")
        .count();
    let beats = t.decisions().filter(|r| r.kind == "beat").count();
    assert_eq!((connects, beats), (4, 4));
}

/// The panel's window is `seconds_since < 90` (worker_registry.py l. 96):
/// a bus beat stamped 0:00:00 is `ok` at the poll at 89 s and `stale` at
/// the one at exactly 90 s.
#[test]
fn panel_stale_at_exactly_90s() {
    let d = decisions(
        "0ms",
        "100s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
panel_every = "1s"
[[node]]
name = "b"
kind = "bus"
host = "master"
[[node]]
name = "a1"
kind = "agent"
host = "master"
bus = "b"
[[fault]]
at = "10s"
kind = "kill"
node = "b"
"#,
    );
    assert_eq!(
        having(&d, "worker-status"),
        [
            "0:00:01.000 api worker-status ok",
            "0:01:30.000 api worker-status stale"
        ]
    );
}

/// A /deploy that cannot be dispatched fails its row at once with the
/// exception's name (`SwarmDeployStrategy`, strategies.py l. 217-232).
#[test]
fn failed_dispatch_fails_the_row() {
    let d = decisions(
        "10ms",
        "10s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
actions = [{ at = "1s", action = "deploy", host_uuid = "a1", decky = "d1" }]
[[node]]
name = "a1"
kind = "agent"
[[fault]]
at = "500ms"
kind = "kill"
node = "a1"
"#,
    );
    assert_eq!(
        having(&d, "lifecycle-row"),
        [
            "0:00:01.000 api lifecycle-row running",
            "0:00:01.020 api lifecycle-row failed"
        ]
    );
}

/// The master's calls to an agent pin its certificate first on a blocking
/// socket of their own (`swarm/client.py` l. 179-212): two round trips
/// (TCP, TLS) before httpx's own connection, so a probe at 1:00 answered
/// at 60.100 (pin 60.000-60.040, httpx TCP 60.060, TLS 60.080, response
/// 60.100), and a row whose pin is not the agent's certificate is
/// `unreachable` (FingerprintMismatchError, l. 202-205) with
/// `last_heartbeat` untouched.
#[test]
fn probe_pins_the_agent_certificate_first() {
    let d = decisions_msg(
        "10ms",
        "70s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
probe_every = "1m"
actions = [{ at = "1s", action = "enrol", host_uuid = "b1", name = "b", certificate = "other", node = "a1" }]
[[node]]
name = "a1"
kind = "agent"
"#,
    );
    let probes = having(&d, "api probe");
    assert_eq!(probes.len(), 2, "{d:#?}");
    assert!(
        probes.contains(&"0:01:00.100 api probe ok uuid=a1"),
        "{probes:?}"
    );
    assert!(
        probes.contains(&"0:01:00.040 api probe FingerprintMismatchError uuid=b1"),
        "{probes:?}"
    );
    let rows = having(&d, "api host-row");
    assert!(
        rows.iter()
            .any(|l| l.starts_with("0:01:00.040 api host-row unreachable uuid=b1")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|l| l.starts_with("0:01:00.100 api host-row active uuid=a1")
                && l.ends_with("last_heartbeat=0:01:00.100")),
        "{rows:?}"
    );
}

/// The pin's `socket.create_connection(.., timeout=10.0)` (l. 179): a
/// dispatch to a crashed host fails its row at +10 s with
/// `TimeoutError: timed out` (not httpx's 5 s ConnectTimeout); a paused
/// agent (its kernel accepts) at +10 s + 1 RTT, the handshake's read
/// timing out; a refused connect is the socket's `ConnectionRefusedError`.
#[test]
fn dispatch_pin_timeouts_and_refusal() {
    let dispatch = |fault: &str| {
        decisions_msg(
            "10ms",
            "30s",
            &format!(
                r#"
[[node]]
name = "api"
kind = "api"
host = "master"
actions = [{{ at = "1s", action = "deploy", host_uuid = "a1", decky = "d1" }}]
[[node]]
name = "a1"
kind = "agent"
[[fault]]
at = "500ms"
kind = "{fault}"
node = "a1"
"#
            ),
        )
    };
    let failed = |d: &[String]| -> Vec<String> {
        having(d, "lifecycle-row failed")
            .iter()
            .map(|l| l.to_string())
            .collect()
    };
    let crashed = dispatch("crash");
    let f = failed(&crashed);
    assert_eq!(f.len(), 1, "{crashed:#?}");
    assert!(f[0].starts_with("0:00:11.000 "), "{f:?}");
    assert!(f[0].contains("error=\"TimeoutError: timed out\""), "{f:?}");
    let paused = dispatch("pause");
    let f = failed(&paused);
    assert_eq!(f.len(), 1, "{paused:#?}");
    assert!(f[0].starts_with("0:00:11.020 "), "{f:?}");
    assert!(
        f[0].contains("TimeoutError: The handshake operation timed out"),
        "{f:?}"
    );
    let killed = dispatch("kill");
    let f = failed(&killed);
    assert_eq!(f.len(), 1, "{killed:#?}");
    assert!(f[0].starts_with("0:00:01.020 "), "{f:?}");
    assert!(
        f[0].contains("ConnectionRefusedError: [Errno 111] Connection refused"),
        "{f:?}"
    );
}

/// The lifecycle push builds its body (`executor.status()`, like a tick)
/// before posting (`heartbeat.py` l. 187-191): with `tick_time` 200 ms a
/// deploy reaching the agent at 1.090 (pin, then httpx) and done at
/// 11.090 is pushed at 11.290 and closes its row at 11.340, while
/// `completed_at` stays the agent's clock at the end, 11.090.
#[test]
fn lifecycle_push_builds_its_body_first() {
    let d = decisions_msg(
        "10ms",
        "20s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
actions = [{ at = "1s", action = "deploy", host_uuid = "a1", decky = "d1" }]
[[node]]
name = "a1"
kind = "agent"
tick_time = "200ms"
operation_time = "10s"
"#,
    );
    let closed = having(&d, "m lifecycle-row succeeded");
    assert_eq!(closed.len(), 1, "{d:#?}");
    assert!(closed[0].starts_with("0:00:11.340 "), "{closed:?}");
    assert!(
        closed[0].ends_with("completed_at=0:00:11.090"),
        "{closed:?}"
    );
    assert_eq!(having(&d, "a1 push "), ["0:00:11.350 a1 push 204"]);
}

// ---- the handler and the sweep, on the database ----

fn host(fp: &str) -> HostRow {
    HostRow {
        name: "a1".into(),
        fingerprint: fp.into(),
        status: "enrolled".into(),
        last_heartbeat: None,
        address: Some(1),
    }
}

fn db() -> Db {
    let mut db = Db::default();
    db.hosts.insert("a1".into(), host("a1"));
    db
}

fn body(uuid: &str, status: Option<Status>, lifecycle: Option<Vec<Delta>>) -> Body {
    Body::Object {
        host_uuid: Some(Json::Str(uuid.into())),
        agent_version: None,
        status: status.map(Json::Status),
        topology: None,
        lifecycle,
    }
}

fn idle() -> Option<Status> {
    Some(Status {
        deployed: false,
        deckies: vec![],
    })
}

fn cert(f: &str) -> Cert {
    Cert::Signed(f.into())
}

/// 422 before 404 before 403 (api_heartbeat.py l. 235-240, 64-72).
#[test]
fn handler_order_422_404_403_204() {
    let mut d = db();
    assert_eq!(
        d.heartbeat(5, &Cert::None, &body("ghost", None, None)).0,
        422
    );
    assert_eq!(d.heartbeat(5, &Cert::None, &Body::NotJson).0, 422);
    assert_eq!(
        d.heartbeat(5, &Cert::None, &body("ghost", idle(), None)),
        (404, "unknown host")
    );
    assert_eq!(
        d.heartbeat(5, &Cert::None, &body("a1", idle(), None)),
        (403, "peer cert unavailable")
    );
    assert_eq!(
        d.heartbeat(5, &cert("a2"), &body("a1", idle(), None)),
        (403, "cert fingerprint mismatch")
    );
    assert_eq!(d, db(), "nothing changed");
    assert_eq!(
        d.heartbeat(5, &cert("a1"), &body("a1", idle(), None)),
        (204, "")
    );
    assert_eq!(d.hosts["a1"].status, "active");
    assert_eq!(d.hosts["a1"].last_heartbeat, Some(5));
    // An empty pinned fingerprint matches nothing (l. 70-71).
    let mut e = Db::default();
    e.hosts.insert("a1".into(), host(""));
    assert_eq!(e.heartbeat(5, &cert(""), &body("a1", idle(), None)).0, 403);
}

fn row(started: u64, status: &str) -> LifecycleRow {
    LifecycleRow {
        decky: "d1".into(),
        operation: "deploy".into(),
        host: "a1".into(),
        status: status.into(),
        started_at: started,
        completed_at: None,
        error: None,
    }
}

fn delta(status: &str, error: Option<String>, at: Option<u64>) -> Delta {
    Delta {
        decky: "d1".into(),
        operation: "deploy".into(),
        status: status.into(),
        error: error.map(Arc::from),
        completed_at_us: at,
    }
}

/// Deltas go to the newest open row (decky_lifecycle.py l. 74-86); only
/// running/succeeded/failed (l. 172); error cut to 2000 (l. 197); the
/// delta's completed_at, else the master's for a terminal status only.
#[test]
fn deltas_newest_open_row_statuses_truncation_and_completed_at() {
    let mut d = db();
    d.lifecycle.insert(1, row(10, "running"));
    d.lifecycle.insert(2, row(20, "pending"));
    d.lifecycle.insert(3, row(30, "succeeded"));
    let long = "x".repeat(2500);
    d.heartbeat(
        100,
        &cert("a1"),
        &body("a1", idle(), Some(vec![delta("failed", Some(long), None)])),
    );
    assert_eq!(
        d.lifecycle[&2].status, "failed",
        "the newest open row, not the terminal one"
    );
    assert_eq!(d.lifecycle[&2].error.as_ref().map(String::len), Some(2000));
    assert_eq!(d.lifecycle[&2].completed_at, Some(100));
    d.heartbeat(
        110,
        &cert("a1"),
        &body("a1", idle(), Some(vec![delta("pending", None, None)])),
    );
    assert_eq!(
        d.lifecycle[&1].status, "running",
        "pending is not a delta status"
    );
    d.heartbeat(
        120,
        &cert("a1"),
        &body("a1", idle(), Some(vec![delta("running", None, None)])),
    );
    assert_eq!(
        d.lifecycle[&1].completed_at, None,
        "running stamps no completed_at"
    );
    d.heartbeat(
        130,
        &cert("a1"),
        &body("a1", idle(), Some(vec![delta("succeeded", None, Some(77))])),
    );
    assert_eq!(
        (
            d.lifecycle[&1].status.as_str(),
            d.lifecycle[&1].completed_at
        ),
        ("succeeded", Some(77))
    );
    let before = d.clone();
    d.heartbeat(
        140,
        &cert("a1"),
        &body("a1", idle(), Some(vec![delta("failed", None, None)])),
    );
    assert_eq!(d.lifecycle, before.lifecycle, "no open row: dropped");
}

/// Shards only when `status.deployed` (l. 251-253), keyed by decky name.
#[test]
fn shards_only_when_deployed() {
    let mut d = db();
    let s = Status {
        deployed: false,
        deckies: vec![("d1".into(), true)],
    };
    d.heartbeat(1, &cert("a1"), &body("a1", Some(s), None));
    assert!(d.shards.is_empty());
    let s = Status {
        deployed: true,
        deckies: vec![("d1".into(), true), ("d2".into(), false)],
    };
    d.heartbeat(2, &cert("a1"), &body("a1", Some(s), None));
    assert_eq!(d.shards["d1"].state, "running");
    assert_eq!(d.shards["d2"].state, "degraded");
}

/// Resync (l. 103-137): flagged when the hash differs, is empty or
/// missing, or another id is reported; not when id and hash match; a
/// flagged topology is skipped.
#[test]
fn topology_resync_rules() {
    let check = |reported: Option<Topology>| {
        let mut d = db();
        d.topologies.insert(
            "t1".into(),
            TopologyRow {
                host: "a1".into(),
                hash: "h".into(),
                needs_resync: false,
            },
        );
        let mut b = body("a1", idle(), None);
        if let Body::Object { topology, .. } = &mut b {
            *topology = reported;
        }
        d.heartbeat(1, &cert("a1"), &b);
        d.topologies["t1"].needs_resync
    };
    let topo = |id: &str, hash: &str| {
        Some(Topology {
            id: id.into(),
            hash: hash.into(),
        })
    };
    assert!(!check(topo("t1", "h")));
    assert!(check(topo("t1", "other")));
    assert!(check(topo("t1", "")));
    assert!(check(topo("t2", "h")));
    assert!(check(None));
}

/// The sweep: open rows with `started_at < now - 1 h`, strictly
/// (decky_lifecycle.py l. 97-98).
#[test]
fn sweep_is_strict_and_open_rows_only() {
    let hour = 3_600_000_000;
    let mut d = db();
    d.lifecycle.insert(1, row(1_000, "running"));
    d.lifecycle.insert(2, row(999, "pending"));
    d.lifecycle.insert(3, row(0, "succeeded"));
    d.sweep(hour + 1_000);
    assert_eq!(
        d.lifecycle[&1].status, "running",
        "started_at == cutoff is kept"
    );
    assert_eq!(d.lifecycle[&2].status, "failed");
    assert_eq!(
        d.lifecycle[&2].error.as_deref(),
        Some("master restarted during operation")
    );
    assert_eq!(d.lifecycle[&2].completed_at, Some(hour + 1_000));
    assert_eq!(d.lifecycle[&3].status, "succeeded");
}

/// An enrol without `node` is the dashboard's bundle flow: the row's
/// address is `""` until the host fetches its tarball
/// (`api_enroll_bundle.py` l. 159-175). The probe skips it
/// (`api_list_hosts.py` l. 35-36); a call to it fails in the pin's
/// `getaddrinfo` at once (`swarm/client.py` l. 179): a dispatch fails its
/// row, and a decommission logs the failed self-destruct
/// (`api_decommission_host.py` l. 49-58: the model's `self-destruct
/// failed`) before it deletes the row (found by the oracle).
#[test]
fn a_row_without_an_address_fails_every_call_at_once() {
    let d = decisions_msg(
        "10ms",
        "20s",
        r#"
[[node]]
name = "api"
kind = "api"
host = "master"
probe_every = "5s"
actions = [
  { at = "2s", action = "enrol", host_uuid = "g1", name = "ghost", certificate = "fresh" },
  { at = "4s", action = "mutate", host_uuid = "g1", decky = "d" },
  { at = "12s", action = "decommission", host_uuid = "g1" },
]
"#,
    );
    assert_eq!(having(&d, " probe "), Vec::<&str>::new());
    assert_eq!(
        having(&d, "api operator"),
        [
            "0:00:02.000 api operator enrol name=ghost uuid=g1",
            "0:00:12.000 api operator decommission uuid=g1",
            "0:00:12.000 api operator self-destruct failed uuid=g1 gaierror: [Errno -2] Name or service not known"
        ]
    );
    assert_eq!(
        having(&d, "lifecycle-row failed"),
        ["0:00:04.000 api lifecycle-row failed id=1 decky=d operation=mutate host=g1 started_at=0:00:04.000 completed_at=0:00:04.000 error=\"gaierror: [Errno -2] Name or service not known\""]
    );
    assert_eq!(
        having(&d, "host-row"),
        [
            "0:00:02.000 api host-row enrolled uuid=g1 name=ghost",
            "0:00:12.000 api host-row deleted uuid=g1 name=ghost"
        ]
    );
}

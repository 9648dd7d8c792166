//! The JoinMarket directory server's heartbeat, and simulated peers for it.
//!
//! Upstreams: joinmarket-ng (Python) `directory_server/src/directory_server/
//! heartbeat.py`, `peer_registry.py`, `server.py`; joinmarket-rs (Rust)
//! `crates/joinmarket-dn/src/{heartbeat,router,peer}.rs`. What each profile
//! reproduces, point by point, is in `docs/models/joinmarket-directory.md`.

mod directory;
mod fuzz;
pub mod invariants;
pub mod location;
mod peer;
mod setup;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use heartsim_sim::trace::{Reason, RecordKind};
use heartsim_sim::{Deadline, Duration, Input, Machine, Now, Outbox};
use proptest::strategy::BoxedStrategy;
use schemars::{JsonSchema, SchemaGenerator};

pub use directory::Directory;
use location::Location;
pub use peer::{Behaviour, ChatLine, Peer, PeerSpec};
pub use setup::{ConfigSection, NodeKeys, Role, Setup};

use crate::scenario::{self, AnySetup, NodeSection, ScenarioError, SectionSchemas, Sections};

/// The model, as the registry lists it.
pub const MODEL: &dyn scenario::Model = &JoinmarketDirectory;

/// The JoinMarket directory server's heartbeat and its peers.
pub struct JoinmarketDirectory;

const PROFILES: [scenario::Profile; 3] = [
    Profile::JoinmarketRs.entry(),
    Profile::JoinmarketNg.entry(),
    Profile::JoinmarketNgEb812d4c.entry(),
];

const INVARIANTS: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < names.len() {
        names[i] = invariants::Invariant::ALL[i].name();
        i += 1;
    }
    names
};

impl scenario::Model for JoinmarketDirectory {
    fn name(&self) -> &'static str {
        "joinmarket-directory"
    }
    fn about(&self) -> &'static str {
        "The JoinMarket directory server's heartbeat (sweeps, PINGs, evictions) and simulated peers."
    }
    fn docs(&self) -> &'static str {
        "docs/models/joinmarket-directory.md"
    }
    fn profiles(&self) -> &'static [scenario::Profile] {
        &PROFILES
    }
    fn invariants(&self) -> &'static [&'static str] {
        &INVARIANTS
    }
    fn records(&self) -> &'static [RecordKind] {
        RECORDS
    }
    fn deadlines(&self) -> &'static [&'static str] {
        &[
            "handshake timeout",
            "handshaked",
            "nick auth timeout",
            "sweep",
            "pong wait",
            "send timeout",
            "close timeout",
            "reconnect",
            "chat",
            "ping directory",
        ]
    }
    /// The directory trusts a peer from its `register`; an `evict` or a
    /// `disconnect` ends that (`reject` refuses a connection that was
    /// never trusted: no verdict).
    fn verdicts(&self) -> &'static [scenario::VerdictKind] {
        use scenario::{Says, VerdictKind};
        &[
            VerdictKind {
                kind: kind::REGISTER,
                says: Says::Trust,
            },
            VerdictKind {
                kind: kind::EVICT,
                says: Says::Suspect,
            },
            VerdictKind {
                kind: kind::DISCONNECT,
                says: Says::Suspect,
            },
        ]
    }
    /// Both upstreams serve peers over TCP (through Tor).
    fn transport(&self) -> scenario::Transport {
        scenario::Transport::Streams
    }
    fn validate(&self, sections: &Sections<'_>) -> Result<Box<dyn AnySetup>, ScenarioError> {
        Ok(Box::new(setup::validate(sections)?))
    }
    fn schema(&self, generator: &mut SchemaGenerator) -> SectionSchemas {
        SectionSchemas {
            config: Some(generator.subschema_for::<ConfigSection>()),
            node: NodeKeys::json_schema(generator),
        }
    }
    fn fuzz_hub(&self) -> NodeSection {
        fuzz::hub()
    }
    fn fuzz_node(&self) -> BoxedStrategy<NodeSection> {
        fuzz::peer()
    }
    fn fuzz_config(&self) -> BoxedStrategy<toml::Table> {
        fuzz::config()
    }
    /// joinmarket-rs hard-codes its timers: its cases keep the defaults;
    /// only HEAD has nick authentication.
    fn fuzz_config_for(&self, profile: &str, mut config: toml::Table) -> toml::Table {
        match Profile::from_name(profile) {
            Some(Profile::JoinmarketNg) => config,
            Some(Profile::JoinmarketNgEb812d4c) => {
                config.remove("nick_auth");
                config.remove("nick_auth_timeout");
                config
            }
            _ => toml::Table::new(),
        }
    }
    /// What upstream itself gets wrong is not asked of it: see
    /// [`invariants::upstream_breaks`].
    fn fuzz_invariants(&self, profile: &str) -> Vec<&'static str> {
        let broken = Profile::from_name(profile).map_or(&[][..], invariants::upstream_breaks);
        invariants::Invariant::ALL
            .into_iter()
            .filter(|i| !broken.contains(i))
            .map(invariants::Invariant::name)
            .collect()
    }
}

/// `{"type": 798, "line": ""}`: moved from 797, which collides with the
/// reference client's local-only CONNECT_IN.
pub const PING_TYPE: u16 = 798;
pub const PONG_TYPE: u16 = 799;
pub const PUBMSG_TYPE: u16 = 687;
/// The directory's handshake answer (`MessageType.DN_HANDSHAKE`).
pub const DN_HANDSHAKE_TYPE: u16 = 795;
/// Location of a peer that serves no onion: a taker (or a watcher, which
/// the directory cannot tell apart from a taker).
pub const NOT_SERVING_ONION: &str = "NOT-SERVING-ONION";

/// One line on a peer connection. Real frames are JSON envelopes ending in
/// `\r\n`; the simulation keeps their meaning and prints their wire text.
/// (The async driver carries them as serde JSON.)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Frame {
    /// The peer's handshake. `ping` is `features["ping"] is True`,
    /// `nick_auth` `features["nick_auth"] is True`.
    Handshake {
        nick: Arc<str>,
        location: Arc<str>,
        ping: bool,
        directory: bool,
        nick_auth: bool,
    },
    Ping,
    Pong,
    /// A PUBMSG line, `<from_nick>!PUBLIC<body>`.
    PubMsg(Arc<str>),
    /// A line that fails to parse. It still refreshes `last_seen`: both
    /// upstreams stamp the peer before parsing.
    Malformed,
    /// The directory's answer to a handshake (`DN_HANDSHAKE`).
    HandshakeReply {
        accepted: bool,
    },
    /// joinmarket-ng HEAD nick authentication (JMP-0005): the directory's
    /// challenge (`NICK_AUTH_CHALLENGE`, 803), the peer's signed proof
    /// (`NICK_AUTH_PROOF`, 805), the verdict (`NICK_AUTH_RESULT`, 807).
    NickAuthChallenge,
    NickAuthProof,
    NickAuthResult(AuthCode),
    /// A PEERLIST entry announcing a departure (`create_peerlist_entry(
    /// nick, location, disconnected=True)`, type 789).
    PeerList {
        nick: Arc<str>,
        location: Arc<str>,
    },
}

/// `NickAuthResult.code` (`server.py` `_send_nick_auth_result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AuthCode {
    Ok,
    Malformed,
    Expired,
}

impl AuthCode {
    fn as_str(self) -> &'static str {
        match self {
            AuthCode::Ok => "ok",
            AuthCode::Malformed => "malformed",
            AuthCode::Expired => "expired",
        }
    }
}

/// joinmarket-ng HEAD's nick authentication, on when a directory id is
/// configured (`nick_auth_directory_id`; upstream's default is none, so it
/// is off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NickAuth {
    /// `NickAuthMode.REQUIRE_VERIFIED`: a peer that does not negotiate it is
    /// refused; otherwise `PREFER_VERIFIED`.
    pub require: bool,
    /// `nick_auth_timeout` (default 30 s; `server.py` clamps it to
    /// 0.1..=30 s): for the challenge's write and for the proof.
    pub timeout: Duration,
}

impl Frame {
    /// The `!orderbook` probe the directory sends to a non-ping maker:
    /// `"<dn_nick>!PUBLIC!orderbook"` (older joinmarket-ng sent
    /// `"!{nick}!orderbook"`, which legacy makers rejected).
    pub fn orderbook_probe(dn_nick: &str) -> Frame {
        Frame::PubMsg(format!("{dn_nick}!PUBLIC!orderbook").into())
    }
    pub fn is_orderbook_probe(&self) -> bool {
        matches!(self, Frame::PubMsg(line) if line.ends_with("!PUBLIC!orderbook"))
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Handshake {
                nick,
                location,
                ping,
                directory,
                nick_auth,
            } => {
                write!(
                    f,
                    "handshake nick={nick} location={location} ping={ping} directory={directory}"
                )?;
                if *nick_auth {
                    f.write_str(" nick_auth=true")?;
                }
                Ok(())
            }
            Frame::Ping => write!(f, r#"{{"type": {PING_TYPE}, "line": ""}}"#),
            Frame::Pong => write!(f, r#"{{"type": {PONG_TYPE}, "line": ""}}"#),
            Frame::PubMsg(line) => write!(f, r#"{{"type": {PUBMSG_TYPE}, "line": "{line}"}}"#),
            Frame::Malformed => f.write_str("<malformed line>"),
            Frame::HandshakeReply { accepted } => write!(
                f,
                r#"{{"type": {DN_HANDSHAKE_TYPE}, "line": "{{\"accepted\": {accepted}}}"}}"#
            ),
            Frame::NickAuthChallenge => f.write_str(r#"{"type": 803, "line": "<challenge>"}"#),
            Frame::PeerList { nick, location } => {
                write!(f, r#"{{"type": 789, "line": "{nick};{location};D"}}"#)
            }
            Frame::NickAuthProof => f.write_str(r#"{"type": 805, "line": "<proof>"}"#),
            Frame::NickAuthResult(code) => write!(
                f,
                r#"{{"type": 807, "line": "{{\"code\": \"{}\"}}"}}"#,
                code.as_str()
            ),
        }
    }
}

/// Which upstream the directory reproduces. Every behavioural difference is
/// a method here, so the machine reads as the sweep and asks the profile
/// only where upstreams disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    /// joinmarket-rs: `interval_at` grid, `elapsed() >= T`, monotonic clock.
    JoinmarketRs,
    /// joinmarket-ng HEAD: `sleep` then sweep, `last_seen < now - T`, wall
    /// clock, pending keyed by `(peer_key, connection_id)`.
    JoinmarketNg,
    /// joinmarket-ng at eb812d4c, the commit the seed document describes:
    /// pending keyed by peer key, set after the send returns, never cleared on
    /// disconnect.
    JoinmarketNgEb812d4c,
}

impl Profile {
    pub const ALL: [Profile; 3] = [
        Profile::JoinmarketRs,
        Profile::JoinmarketNg,
        Profile::JoinmarketNgEb812d4c,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Profile::JoinmarketRs => "joinmarket-rs",
            Profile::JoinmarketNg => "joinmarket-ng",
            Profile::JoinmarketNgEb812d4c => "joinmarket-ng-eb812d4c",
        }
    }

    /// As the registry lists it.
    const fn entry(self) -> scenario::Profile {
        let about = match self {
            Profile::JoinmarketRs => {
                "Rust: sweeps on a fixed interval grid, `elapsed() >= T`, monotonic clock"
            }
            Profile::JoinmarketNg => {
                "Python, HEAD: sleep then sweep, idle strictly past T, wall clock"
            }
            Profile::JoinmarketNgEb812d4c => {
                "Python at eb812d4c: pending PONGs keyed by peer, never cleared on disconnect"
            }
        };
        scenario::Profile {
            name: self.name(),
            about,
        }
    }

    pub fn from_name(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == name)
    }

    fn is_ng(self) -> bool {
        self != Profile::JoinmarketRs
    }

    /// Python stamps `last_seen` with `datetime.now(UTC)`; Rust with
    /// `Instant::now()`.
    fn last_seen_clock(self, now: Now) -> heartsim_sim::Timestamp {
        if self.is_ng() {
            now.wall
        } else {
            now.mono
        }
    }

    /// Python: `peer.last_seen < now - timedelta(T)`, idle strictly past T.
    /// Rust: `last_seen.elapsed() >= T`.
    fn is_idle_past(self, idle: Duration, threshold: Duration) -> bool {
        if self.is_ng() {
            idle > threshold
        } else {
            idle >= threshold
        }
    }

    /// eb812d4c keys makers by `location_string` and takers by nick; later
    /// joinmarket-ng and joinmarket-rs key by nick.
    fn registry_key(self, nick: &Arc<str>, location: &Location) -> Arc<str> {
        match location {
            Location::Maker(loc) if self == Profile::JoinmarketNgEb812d4c => loc.clone(),
            _ => nick.clone(),
        }
    }

    /// Maker, taker or rejected: see [`location`]. Python also validates
    /// the `PeerInfo` it builds from the handshake, nick included.
    fn parse_location(self, nick: &str, location: &Arc<str>) -> Location {
        if self.is_ng() {
            location::python_peer_info(nick, location::parse_python(location))
        } else {
            location::parse_rust(location)
        }
    }

    /// Pending state is per connection (HEAD's `(peer_key, connection_id)`,
    /// Rust's per-peer-meta bool, dropped with the meta) or per key (eb812d4c).
    fn pending_per_connection(self) -> bool {
        self != Profile::JoinmarketNgEb812d4c
    }

    /// A second handshake for a key that is still registered: HEAD raises
    /// `PeerOwnershipConflictError` for unverified peers and joinmarket-rs
    /// `AdmissionError::DuplicateNick`; eb812d4c overwrites `_peers[key]`.
    fn replaces_duplicate_key(self) -> bool {
        self == Profile::JoinmarketNgEb812d4c
    }

    /// Why a duplicate nick is refused, and whether a rejection line goes
    /// out before the close. HEAD: `PeerOwnershipConflictError(f"Peer nick
    /// already registered: {peer.nick}")` (`peer_registry.py`), answered
    /// with a `DN_HANDSHAKE` whose motd reads `Rejected: ...` (`server.py`
    /// `_perform_handshake`); joinmarket-rs: `AdmissionError::DuplicateNick`,
    /// `"nick already connected: {0}"` (`admission.rs`), logged, and the
    /// connection dropped without a word (`peer.rs`).
    fn duplicate_rejection(self, nick: &str) -> (String, bool) {
        if self.is_ng() {
            (format!("Peer nick already registered: {nick}"), true)
        } else {
            (format!("nick already connected: {nick}"), false)
        }
    }

    /// Every profile refuses a directory node as a client at handshake:
    /// Python raises `HandshakeError` and closes without a reply (`server.py`
    /// `_perform_handshake`, `except HandshakeError: return None`);
    /// joinmarket-rs `HandshakeError::DirectoryNotAccepted` (silent close).
    /// The registry's own "skip directory peers" rule is therefore never
    /// reached through the server. The reason is each upstream's message.
    fn directory_rejection(self) -> &'static str {
        if self.is_ng() {
            "Directory nodes not accepted as clients"
        } else {
            "directory nodes not accepted as peers"
        }
    }

    /// joinmarket-rs's heartbeat `try_send`s into each peer's 128-frame
    /// channel and never waits; the peer's own task writes the frame to the
    /// socket, and is blocked while that write waits (`peer.rs` ~384-463).
    /// The channel accepts while the task runs, so a socket error never
    /// reaches the heartbeat (it ends the task: a `Reset` here). Filling the
    /// channel (`ChannelFull`) is not modelled. joinmarket-ng awaits the
    /// write in the sweep (`writer.write` + `await drain()`).
    fn sends_through_a_channel(self) -> bool {
        !self.is_ng()
    }

    /// How long a new connection has to send its handshake before it is
    /// closed: Python `asyncio.wait_for(connection.receive(), timeout=30.0)`
    /// (`server.py` `_perform_handshake`, HEAD and eb812d4c); Rust
    /// `HANDSHAKE_TIMEOUT_SECS = 10` (`peer.rs`).
    fn handshake_timeout(self) -> Duration {
        Duration::from_secs(if self.is_ng() { 30 } else { 10 })
    }

    /// HEAD wraps the writes that go through `_send_to_peer` (the
    /// heartbeat's, relays, broadcasts) in `asyncio.wait_for(..., 30.0)`
    /// (`_DIRECTORY_SEND_TIMEOUT_SEC`, `server.py` ~660-682; the handshake
    /// reply and rejection writes have none); eb812d4c awaits
    /// `connection.send` with no timeout, so one stalled peer with full
    /// buffers stops the sweep until it drains.
    fn send_timeout(self) -> Option<Duration> {
        (self == Profile::JoinmarketNg).then_some(Duration::from_secs(30))
    }

    /// HEAD serialises everything done to one nick's owner behind a
    /// per-nick `asyncio.Lock` (`_owner_lock`, `server.py` ~435-440): each
    /// `_send_to_peer` holds it for its whole write, 30 s bound included
    /// (~654-682), and `_register_peer` (~442-455) and
    /// `_remove_owned_peer_state` (~491-531) wait for it. eb812d4c has no
    /// such lock; joinmarket-rs's per-peer task writes alone.
    fn owner_lock(self) -> bool {
        self == Profile::JoinmarketNg
    }

    /// How long after its handshake reply a peer becomes HANDSHAKED (and so
    /// swept, with `last_seen` stamped): joinmarket-ng sends the reply,
    /// `await asyncio.sleep(0.05)`, then `update_status(HANDSHAKED)` (HEAD
    /// `server.py` ~321-334; eb812d4c ~225-239, where `register` itself
    /// waits for the sleep). joinmarket-rs registers right after the reply.
    fn handshaked_after(self) -> Option<Duration> {
        self.is_ng().then_some(Duration::from_ms(50))
    }

    /// joinmarket-rs disconnects a peer that sends a 7th PING, a 31st
    /// PUBMSG or a 4th `!orderbook` within a minute (`peer.rs`:
    /// `MAX_PING_PER_MINUTE`, `MAX_PUBMSG_PER_MINUTE`,
    /// `MAX_ORDERBOOK_PER_MINUTE`). joinmarket-ng's rate limiter
    /// (messages per connection, token bucket) is not modelled.
    fn rate_limit(self, limit: RateLimit) -> Option<usize> {
        (!self.is_ng()).then_some(match limit {
            RateLimit::Ping => 6,
            RateLimit::PubMsg => 30,
            RateLimit::Orderbook => 3,
        })
    }

    /// joinmarket-rs admits one nick per maker onion host.
    fn sybil_guard(self) -> bool {
        !self.is_ng()
    }
}

/// joinmarket-rs's per-peer rate-limit buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RateLimit {
    Ping,
    PubMsg,
    Orderbook,
}

impl RateLimit {
    const WINDOW: Duration = Duration::from_secs(60);

    /// The `disconnect` reason: upstream's error text.
    fn reason(self) -> &'static str {
        match self {
            RateLimit::Ping => "PING rate limit exceeded",
            RateLimit::PubMsg => "pubmsg broadcast rate limit exceeded",
            RateLimit::Orderbook => "!orderbook rate limit exceeded",
        }
    }
}

/// The four heartbeat timers. Defaults are both upstreams' (Rust hard-codes
/// them; Python reads them from settings, all > 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub sweep_interval: Duration,
    pub idle_threshold: Duration,
    pub hard_evict: Duration,
    pub pong_wait: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            sweep_interval: Duration::from_secs(60),
            idle_threshold: Duration::from_secs(600),
            hard_evict: Duration::from_secs(1500),
            pong_wait: Duration::from_secs(30),
        }
    }
}

/// Record kinds this model writes to the trace.
pub mod kind {
    pub const REGISTER: &str = "register";
    pub const REJECT: &str = "reject";
    pub const DISCONNECT: &str = "disconnect";
    pub const SWEEP: &str = "sweep";
    pub const PING: &str = "ping";
    pub const PROBE: &str = "probe";
    pub const PONG: &str = "pong";
    pub const WAIT: &str = "wait";
    pub const EVICT: &str = "evict";
    /// The `msg` of an eb812d4c eviction of a key that no connection owns
    /// any more: upstream's callback runs and does nothing.
    pub const NO_CONNECTION: &str = "no current connection";
    /// The `msg` of an eb812d4c disconnect that another connection's
    /// cleanup caused: the peer is unregistered, its connection stays open.
    pub const LEFT_OPEN: &str = "its connection stays open";
    pub const SEND_ERROR: &str = "send-error";
    pub const RECONNECT: &str = "reconnect";
    /// A peer's connect to the directory failed (reason: `connection
    /// refused` or `connection timed out`).
    pub const CONNECT_FAILED: &str = "connect-failed";
    /// A peer's connection was reset under it (reason: `connection reset`
    /// or `connection timed out`).
    pub const CONNECTION_LOST: &str = "connection-lost";
}

/// Every record this model writes, with its reasons (see [`kind`]).
const RECORDS: &[RecordKind] = {
    use heartsim_sim::trace::Reason::{Family, Is};
    /// How a connection ends under the reader (`ConnError`'s messages).
    const LOST: &[Reason] = &[Is("connection reset"), Is("connection timed out")];
    &[
        RecordKind::decision(
            kind::REGISTER,
            &[],
            "the directory registered a peer (msg: `maker` or `taker`, plus ` ping`, plus ` verified` after nick authentication)",
        ),
        RecordKind::decision(
            kind::REJECT,
            &[
                Is("handshake timeout"),
                Is("expected a handshake"),
                Family("Peer nick already registered: ", "<nick>"),
                Family("nick already connected: ", "<nick>"),
                Is("sybil guard rejected: onion address already has an active registration"),
                Is("Directory nodes not accepted as clients"),
                Is("verified nick authentication required"),
                Is("nick authentication timed out"),
                Is("nick authentication payload was malformed"),
                Family("Verified nick already registered: ", "<nick>"),
                Is("directory nodes not accepted as peers"),
                Family("invalid onion address in location-string: ", "<why>"),
                Family("Invalid handshake format: ", "<pydantic validation error>"),
            ],
            "the directory refused a connection at handshake",
        ),
        RecordKind::decision(
            kind::DISCONNECT,
            &[
                Is("PING rate limit exceeded"),
                Is("pubmsg broadcast rate limit exceeded"),
                Is("!orderbook rate limit exceeded"),
                Is("malformed line"),
                Is("displaced by a verified registration"),
                // joinmarket-ng: a broadcast or relay write to the peer
                // failed (`_handle_send_failed`; HEAD's 30 s timeout has
                // an empty message).
                Is("send failed: connection reset"),
                Is("send failed: broken pipe"),
                Is("send failed: "),
                Is("peer closed"),
                Is("connection reset"),
                Is("connection timed out"),
                // joinmarket-rs: a task more than 256 broadcasts behind.
                Is("lagged on the broadcast channel"),
            ],
            "a registered peer's connection ended",
        ),
        RecordKind::decision(kind::SWEEP, &[], "the directory's heartbeat sweep began"),
        RecordKind::decision(kind::PING, &[], "the directory sent a peer a PING"),
        RecordKind::decision(kind::PROBE, &[], "the directory sent a peer `!orderbook`"),
        RecordKind::decision(
            kind::WAIT,
            &[],
            "the sweep began its PONG wait (msg: `<n> pinged`)",
        ),
        RecordKind::decision(
            kind::PONG,
            &[Is("cleared"), Is("unsolicited")],
            "a PONG reached the directory",
        ),
        RecordKind::decision(
            kind::EVICT,
            &[
                Is("idle timeout"),
                Is("pong timeout"),
                Is("send failed: connection reset"),
                Is("send failed: broken pipe"),
                // joinmarket-ng HEAD's send timeout: Python's
                // `TimeoutError` has an empty message.
                Is("send failed: "),
            ],
            "the directory evicted a peer (msg `no current connection`: an eb812d4c eviction of a key no connection owns)",
        ),
        RecordKind::decision(
            kind::SEND_ERROR,
            &[
                Is("connection reset"),
                Is("broken pipe"),
                Is("send timed out"),
            ],
            "a probe's send failed (upstream only logs it)",
        ),
        RecordKind::decision(kind::RECONNECT, &[], "a simulated peer connects again"),
        RecordKind::decision(
            kind::CONNECT_FAILED,
            &[Is("connection refused"), Is("connection timed out")],
            "a simulated peer's connect failed",
        ),
        RecordKind::decision(
            kind::CONNECTION_LOST,
            LOST,
            "a simulated peer's connection was reset under it",
        ),
    ]
};

/// A node of a JoinMarket scenario: the directory or one simulated peer.
#[derive(Debug)]
pub enum Node {
    Directory(Box<Directory>),
    Peer(Peer),
}

impl Machine for Node {
    type Msg = Frame;

    fn handle(&mut self, now: Now, input: Input<Frame>, out: &mut Outbox<Frame>) {
        match self {
            Node::Directory(d) => d.handle(now, input, out),
            Node::Peer(p) => p.handle(now, input, out),
        }
    }

    fn poll_timeout(&self) -> Option<Deadline> {
        match self {
            Node::Directory(d) => d.poll_timeout(),
            Node::Peer(p) => p.poll_timeout(),
        }
    }

    fn describe(msg: &Frame) -> Cow<'static, str> {
        match msg {
            Frame::Ping => Cow::Borrowed(r#"{"type": 798, "line": ""}"#),
            Frame::Pong => Cow::Borrowed(r#"{"type": 799, "line": ""}"#),
            other => Cow::Owned(other.to_string()),
        }
    }
}

//! Upstream JoinMarket behaviours that need more than a scenario file's
//! `[[expect]]`: driving the directory by hand, and comparing profiles or
//! seeds. The rest of the checklist is in `scenarios/joinmarket/` (see
//! `docs/models/joinmarket-directory.md` for the map).

use std::path::Path;
use std::sync::Arc;

use heartsim::models::joinmarket::location::onion_for;
use heartsim::models::joinmarket::{Directory, Frame, Profile, Setup, Timers};
use heartsim::models::ALL;
use heartsim::run::run;
use heartsim::scenario::Scenario;
use heartsim::sim::trace::{Level, Record};
use heartsim::sim::{ConnId, Input, NodeId, Now, Outbox, Timestamp};

const PEER: NodeId = NodeId(1);
/// The connection PEER handshakes on.
const STREAM: ConnId = ConnId(1);

fn at(secs: u64) -> Now {
    let t = Timestamp::from_us(secs * 1_000_000);
    Now { mono: t, wall: t }
}

fn handshake(ping: bool) -> Frame {
    handshake_at(ping, &onion_for("alice"))
}

fn handshake_at(ping: bool, location: &str) -> Frame {
    Frame::Handshake {
        nick: Arc::from("alice"),
        location: Arc::from(location),
        ping,
        directory: false,
        nick_auth: false,
    }
}

/// A directory started at t=0 that got `frame` from PEER at once, past
/// joinmarket-ng's 50 ms registration sleep.
fn directory_after(profile: Profile, frame: Frame) -> (Directory, Outbox<Frame>) {
    let mut d = Directory::new(profile, Timers::default(), "dir");
    let mut out = Outbox::new(NodeId(0));
    d.handle(at(0), Input::Start, &mut out);
    d.handle(
        at(0),
        Input::Accepted {
            conn: STREAM,
            peer: PEER,
        },
        &mut out,
    );
    d.handle(
        at(0),
        Input::Data {
            conn: STREAM,
            peer: PEER,
            msg: frame,
        },
        &mut out,
    );
    // joinmarket-ng registers 50 ms after its reply.
    if let Some(deadline) = d.poll_timeout().filter(|d| d.reason == "handshaked") {
        let now = Now {
            mono: deadline.at,
            wall: deadline.at,
        };
        d.handle(now, Input::Timeout, &mut out);
    }
    (d, out)
}

/// A directory with alice registered at t=0, driven through sweeps by hand.
fn directory(profile: Profile) -> (Directory, Outbox<Frame>) {
    directory_after(profile, handshake(true))
}

/// Fire timers up to `secs`, answering awaited sends with success.
fn advance(d: &mut Directory, out: &mut Outbox<Frame>, secs: u64) {
    while let Some(deadline) = d.poll_timeout() {
        if deadline.at > at(secs).mono {
            break;
        }
        let now = Now {
            mono: deadline.at,
            wall: deadline.at,
        };
        out.clear();
        d.handle(now, Input::Timeout, out);
        loop {
            let awaited = out.sends().find_map(|(to, _, t)| t.map(|t| (to, t)));
            let Some((to, token)) = awaited else {
                break;
            };
            let mut next = Outbox::new(NodeId(0));
            d.handle(
                now,
                Input::SendDone {
                    to,
                    token,
                    result: Ok(()),
                },
                &mut next,
            );
            out.clear();
            std::mem::swap(out, &mut next);
        }
    }
}

fn kinds(out: &Outbox<Frame>) -> Vec<(&'static str, Option<String>)> {
    out.records()
        .map(|r| (r.kind, r.reason.as_ref().map(|s| s.to_string())))
        .collect()
}

#[test]
fn unsolicited_pong_is_ignored_and_does_not_protect_a_later_ping() {
    for profile in Profile::ALL {
        let (mut d, mut out) = directory(profile);
        out.clear();
        // A PONG nobody asked for at 5:00 refreshes last_seen (every frame
        // does) but sets nothing that could clear a future pending PONG.
        d.handle(
            at(300),
            Input::Data {
                conn: STREAM,
                peer: PEER,
                msg: Frame::Pong,
            },
            &mut out,
        );
        assert_eq!(
            kinds(&out),
            vec![("pong", Some("unsolicited".into()))],
            "{profile:?}"
        );
        assert!(!d.is_pending(PEER));
        // Pinged once idle past 600 s counted from 5:00, then evicted.
        advance(&mut d, &mut out, 3600);
        assert_eq!(d.registered(), 0, "{profile:?}: evicted in the end");
    }
}

#[test]
fn pong_after_eviction_has_no_effect() {
    for profile in Profile::ALL {
        let (mut d, mut out) = directory(profile);
        advance(&mut d, &mut out, 700); // pinged and evicted by 11:30 at the latest
        assert_eq!(d.registered(), 0, "{profile:?}");
        out.clear();
        d.handle(
            at(701),
            Input::Data {
                conn: STREAM,
                peer: PEER,
                msg: Frame::Pong,
            },
            &mut out,
        );
        assert!(
            out.is_empty(),
            "{profile:?}: a PONG from an evicted peer is dropped"
        );
        assert_eq!(d.registered(), 0);
    }
}

#[test]
fn pending_is_set_before_the_send_returns_only_in_ng_head() {
    // HEAD adds the owner to pending before awaiting the send; eb812d4c only
    // after it returns. A PONG that arrives while the send is still being
    // awaited is lost under eb812d4c (reference notes: "eb812d4c lost
    // PONG"). joinmarket-rs's heartbeat awaits nothing: `try_send` into the
    // peer's channel, then `add_pong_pending`, while the peer's task writes
    // the frame (its write is the awaited send here).
    for (profile, pending_during_send) in [
        (Profile::JoinmarketNg, true),
        (Profile::JoinmarketNgEb812d4c, false),
        (Profile::JoinmarketRs, true),
    ] {
        let (mut d, mut out) = directory(profile);
        let first_ping_s = if profile == Profile::JoinmarketRs {
            600
        } else {
            660
        };
        // Run sweeps up to just before the first PING.
        advance(&mut d, &mut out, first_ping_s - 1);
        out.clear();
        d.handle(at(first_ping_s), Input::Timeout, &mut out);
        let awaited: Vec<_> = out
            .sends()
            .filter(|(_, m, t)| **m == Frame::Ping && t.is_some())
            .collect();
        assert_eq!(awaited.len(), 1, "{profile:?}: the PING send is awaited");
        assert_eq!(d.is_pending(PEER), pending_during_send, "{profile:?}");
    }
}

#[test]
fn malformed_maker_location_is_a_taker_in_python_and_rejected_in_rust() {
    // Python `_parse_location` checks the port and falls back to "not
    // serving"; then `PeerInfo` validates the host as a v3 onion and the
    // handshake fails silently. joinmarket-rs requires a v3 onion and
    // disconnects silently.
    let valid = onion_for("alice");
    let not_onion = "Invalid handshake format: onion_address";
    for (location, ng_verdict, rs_verdict) in [
        (valid.as_str(), Ok("maker"), Ok("maker")),
        ("garbage:5222", Err(not_onion), Err("wrong length")),
        ("garbage", Ok("taker"), Err("missing port")),
        ("alice.onion:99999", Ok("taker"), Err("invalid port number")),
        ("NOT-SERVING-ONION", Ok("taker"), Ok("taker")),
    ] {
        for profile in Profile::ALL {
            let (d, out) = directory_after(profile, handshake_at(false, location));
            let r = out.records().next().expect("a register or reject record");
            let got: Result<&str, &str> = match r.kind {
                "register" => Ok(r.msg.as_deref().unwrap()),
                "reject" => Err(r.reason.as_deref().unwrap()),
                other => panic!("{other}"),
            };
            match (profile, got) {
                (Profile::JoinmarketRs, Ok(role)) => {
                    assert_eq!(Ok(role), rs_verdict, "{location}")
                }
                (Profile::JoinmarketRs, Err(why)) => {
                    let want = rs_verdict.expect_err(location);
                    assert!(why.contains(want), "{location}: {why}");
                    assert!(out.closes().any(|c| c == STREAM));
                    assert_eq!(d.registered(), 0);
                }
                (_, Ok(role)) => assert_eq!(Ok(role), ng_verdict, "{profile:?} {location}"),
                (_, Err(why)) => {
                    let want = ng_verdict.expect_err(location);
                    assert!(why.starts_with(want), "{profile:?} {location}: {why}");
                    assert!(out.closes().any(|c| c == STREAM));
                    assert!(out.sends().next().is_none(), "no reply: {profile:?}");
                    assert_eq!(d.registered(), 0);
                }
            }
        }
    }
}

#[test]
fn directory_nodes_are_refused_as_clients_by_every_profile() {
    for profile in Profile::ALL {
        let frame = Frame::Handshake {
            nick: Arc::from("dir2"),
            location: Arc::from(onion_for("dir2")),
            ping: true,
            directory: true,
            nick_auth: false,
        };
        let (d, out) = directory_after(profile, frame);
        let r = out.records().next().expect("a record");
        assert_eq!(r.kind, "reject", "{profile:?}");
        assert!(
            r.reason
                .as_deref()
                .is_some_and(|t| t.to_lowercase().starts_with("directory nodes not accepted")),
            "{profile:?}: {:?}",
            r.reason
        );
        assert_eq!(d.registered(), 0);
    }
}

fn load(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/joinmarket")
        .join(name);
    Scenario::load(ALL, &path).expect("scenario parses")
}

fn jsonl(s: &Scenario, seed: Option<u64>) -> Vec<u8> {
    let outcome = run(s, seed, Level::Net).expect("within limits");
    let records: Vec<&Record> = outcome.trace.records().collect();
    let mut bytes = Vec::new();
    outcome.trace.write_jsonl(&records, &mut bytes).unwrap();
    bytes
}

#[test]
fn another_seed_with_drops_gives_another_trace_and_the_same_seed_the_same() {
    let s = load("lossy-links-delay-pongs-but-evict-nobody-ng.toml");
    assert_eq!(jsonl(&s, Some(11)), jsonl(&s, Some(11)));
    assert_ne!(jsonl(&s, Some(11)), jsonl(&s, Some(12)));
}

#[test]
fn the_same_scenario_evicts_at_different_times_under_each_profile() {
    // The strict/`>=` and drift/grid differences, seen end to end.
    let base = load("silent-ping-maker-evicted-after-pong-wait-ng.toml");
    let evict_time = |profile: Profile| {
        let mut s = base.clone();
        s.setup_mut::<Setup>()
            .expect("a joinmarket scenario")
            .profile = profile;
        let out = run(&s, None, Level::Decision).unwrap();
        let t = out
            .trace
            .decisions()
            .find(|r| r.kind == "evict")
            .map(|r| r.t.as_us() / 1_000_000);
        t
    };
    assert_eq!(evict_time(Profile::JoinmarketNg), Some(690));
    assert_eq!(evict_time(Profile::JoinmarketNgEb812d4c), Some(690));
    assert_eq!(evict_time(Profile::JoinmarketRs), Some(630));
}

#[test]
fn python_refuses_a_nick_longer_than_64_characters_silently() {
    // `PeerInfo.nick` has `max_length=64` (jmcore/models.py).
    for (len, refused) in [(64, false), (65, true)] {
        let frame = Frame::Handshake {
            nick: Arc::from("n".repeat(len)),
            location: Arc::from(onion_for("alice")),
            ping: true,
            directory: false,
            nick_auth: false,
        };
        for profile in [Profile::JoinmarketNg, Profile::JoinmarketNgEb812d4c] {
            let (d, out) = directory_after(profile, frame.clone());
            let r = out.records().next().expect("a record");
            if refused {
                assert_eq!(r.kind, "reject", "{profile:?}");
                assert_eq!(
                    r.reason.as_deref(),
                    Some(
                        "Invalid handshake format: nick: String should have at most 64 characters"
                    )
                );
                assert!(out.sends().next().is_none(), "rejected without a reply");
            } else {
                assert_eq!(r.kind, "register", "{profile:?}");
            }
            assert_eq!(d.registered(), usize::from(!refused));
        }
    }
}

fn at_ms(ms: u64) -> Now {
    let t = Timestamp::from_us(ms * 1000);
    Now { mono: t, wall: t }
}

/// What a directory did, step by step: `(ms, record or send)`, the records
/// of a step before its sends. Awaited sends are answered with success at
/// once (and marked with their connection), except on the `stalled`
/// connections (their buffers are full: never), whose writes wait in
/// `held` (`release` answers them). With `closes`, closes are logged too.
#[derive(Default)]
struct Log {
    lines: Vec<(u64, String)>,
    stalled: Vec<ConnId>,
    closes: bool,
    held: Vec<(heartsim::sim::Dest, u64)>,
}

impl Log {
    fn step(&mut self, d: &mut Directory, ms: u64, input: Input<Frame>) -> Outbox<Frame> {
        let mut out = Outbox::new(NodeId(0));
        d.handle(at_ms(ms), input, &mut out);
        for r in out.records() {
            let reason = r.reason.as_deref().unwrap_or("");
            let msg = r
                .msg
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            self.lines.push((
                ms,
                format!("{} {reason}", r.kind).trim_end().to_string() + &msg,
            ));
        }
        if self.closes {
            for conn in out.closes() {
                self.lines.push((ms, format!("close {}", conn.0)));
            }
        }
        let mut awaited = Vec::new();
        for (to, msg, token) in out.sends() {
            let mut line = format!("send {msg}");
            if let (heartsim::sim::Dest::Conn(conn), Some(token)) = (to, token) {
                line += &format!(" on {}", conn.0);
                if self.stalled.contains(&conn) {
                    self.held.push((to, token));
                } else {
                    awaited.push((to, token));
                }
            }
            self.lines.push((ms, line));
        }
        for (to, token) in awaited {
            self.step(
                d,
                ms,
                Input::SendDone {
                    to,
                    token,
                    result: Ok(()),
                },
            );
        }
        out
    }

    /// `conn`'s buffers drain: its stalled writes complete.
    fn release(&mut self, d: &mut Directory, ms: u64, conn: ConnId) {
        self.stalled.retain(|&c| c != conn);
        let (done, kept) = self
            .held
            .drain(..)
            .partition(|(to, _)| *to == heartsim::sim::Dest::Conn(conn));
        self.held = kept;
        for (to, token) in done {
            let result = Ok(());
            self.step(d, ms, Input::SendDone { to, token, result });
        }
    }

    /// A connection from `peer` is accepted and its first line read.
    fn hello(
        &mut self,
        d: &mut Directory,
        ms: u64,
        conn: ConnId,
        peer: NodeId,
        msg: Frame,
    ) -> Outbox<Frame> {
        self.step(d, ms, Input::Accepted { conn, peer });
        self.step(d, ms, Input::Data { conn, peer, msg })
    }

    /// Fire the directory's deadlines before `ms`.
    fn run_until(&mut self, d: &mut Directory, ms: u64) {
        while let Some(deadline) = d.poll_timeout().filter(|t| t.at < at_ms(ms).mono) {
            self.step(d, deadline.at.as_us() / 1000, Input::Timeout);
        }
    }

    /// Fire the directory's deadlines before 1 s.
    fn settle(&mut self, d: &mut Directory) {
        self.run_until(d, 1000);
    }
}

/// Issue 18, point 10: joinmarket-ng answers the handshake, sleeps 0.05 s,
/// and only then marks the peer HANDSHAKED (HEAD `server.py` ~321-334,
/// eb812d4c ~225-239); its handler reads nothing meanwhile. joinmarket-rs
/// registers right after its reply and reads on.
#[test]
fn python_registers_50ms_after_its_reply_and_reads_what_came_meanwhile_after() {
    for profile in Profile::ALL {
        let mut d = Directory::new(profile, Timers::default(), "dir");
        let mut log = Log::default();
        log.step(&mut d, 0, Input::Start);
        log.hello(&mut d, 0, STREAM, PEER, handshake(true));
        log.step(
            &mut d,
            10,
            Input::Data {
                conn: STREAM,
                peer: PEER,
                msg: Frame::Ping,
            },
        );
        log.step(
            &mut d,
            20,
            Input::Closed {
                conn: STREAM,
                peer: PEER,
            },
        );
        log.settle(&mut d);
        let reply = format!("send {}", Frame::HandshakeReply { accepted: true });
        let pong = format!("send {}", Frame::Pong);
        let expected: Vec<(u64, String)> = if profile == Profile::JoinmarketRs {
            vec![
                (0, "register (maker ping)".into()),
                (0, reply),
                // The peer task's own write.
                (10, format!("{pong} on 1")),
                (20, "disconnect peer closed".into()),
            ]
        } else {
            // The handler awaits its PONG (`_handle_ping`), then reads the
            // EOF.
            vec![
                (0, reply),
                (50, "register (maker ping)".into()),
                (50, format!("{pong} on 1")),
                (50, "disconnect peer closed".into()),
            ]
        };
        assert_eq!(log.lines, expected, "{profile:?}");
        assert_eq!(d.registered(), 0);
    }
}

/// Point 10 and the registries: HEAD reserves the nick before the sleep, so
/// a second handshake for it during the sleep is refused; eb812d4c registers
/// only after the sleep, so the second connection overwrites the first 50 ms
/// after its own handshake, and the first stays open.
#[test]
fn a_duplicate_during_the_50ms_sleep_is_refused_by_head_and_overwrites_in_eb812d4c() {
    const OTHER: ConnId = ConnId(2);
    for profile in [Profile::JoinmarketNg, Profile::JoinmarketNgEb812d4c] {
        let mut d = Directory::new(profile, Timers::default(), "dir");
        let mut log = Log::default();
        let mut closes = Vec::new();
        log.step(&mut d, 0, Input::Start);
        for (ms, conn) in [(0, STREAM), (20, OTHER)] {
            log.step(&mut d, ms, Input::Accepted { conn, peer: PEER });
            let out = log.step(
                &mut d,
                ms,
                Input::Data {
                    conn,
                    peer: PEER,
                    msg: handshake(true),
                },
            );
            closes.extend(out.closes());
        }
        log.settle(&mut d);
        let records: Vec<(u64, String)> = log
            .lines
            .into_iter()
            .filter(|(_, l)| !l.starts_with("send"))
            .collect();
        if profile == Profile::JoinmarketNg {
            assert_eq!(
                records,
                vec![
                    (20, "reject Peer nick already registered: alice".into()),
                    (50, "register (maker ping)".into())
                ]
            );
            assert_eq!(closes, vec![OTHER]);
        } else {
            assert_eq!(
                records,
                vec![
                    (50, "register (maker ping)".into()),
                    (70, "register (maker ping)".into())
                ]
            );
            assert!(closes.is_empty(), "the old connection stays open");
        }
        assert_eq!(d.registered(), 1, "{profile:?}");
    }
}

/// Issue 18, point 5: under eb812d4c a handshake for a held key overwrites
/// the entry in place (`self._peers[key] = peer` keeps the dict position),
/// and the old connection's reader still acts on the key: its lines refresh
/// the new entry, its PONG clears the key's pending PONG, and its close
/// unregisters the new peer, whose connection stays open
/// (`server.py@eb8` `_handle_peer_messages`, `_cleanup_peer`).
#[test]
fn eb812d4c_old_connection_keeps_acting_on_its_key() {
    const BOB: NodeId = NodeId(2);
    const BOB_STREAM: ConnId = ConnId(2);
    const NEW: NodeId = NodeId(3);
    const NEW_STREAM: ConnId = ConnId(3);
    let bob = Frame::Handshake {
        nick: Arc::from("bob"),
        location: Arc::from(onion_for("bob")),
        ping: true,
        directory: false,
        nick_auth: false,
    };
    let mut d = Directory::new(Profile::JoinmarketNgEb812d4c, Timers::default(), "dir");
    let mut log = Log::default();
    log.step(&mut d, 0, Input::Start);
    for (ms, conn, peer, frame) in [
        (0, STREAM, PEER, handshake(true)),
        (1_000, BOB_STREAM, BOB, bob),
        // Same onion as alice: the same eb812d4c key.
        (2_000, NEW_STREAM, NEW, handshake(true)),
    ] {
        log.step(&mut d, ms, Input::Accepted { conn, peer });
        log.step(
            &mut d,
            ms,
            Input::Data {
                conn,
                peer,
                msg: frame,
            },
        );
        log.run_until(&mut d, ms + 100);
    }
    assert_eq!(d.registered(), 2, "the new connection replaced alice's");
    // The first sweep that finds both idle (past 600 s since 1.050 and
    // 2.050) is at 11:00: it PINGs in dict order, the overwritten key (now
    // on the new connection) first, then bob.
    log.lines.clear();
    log.run_until(&mut d, 660_001);
    let ping = Frame::Ping.to_string();
    let sends: Vec<&str> = log
        .lines
        .iter()
        .filter(|(_, l)| l.starts_with("send"))
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(
        sends,
        vec![format!("send {ping} on 3"), format!("send {ping} on 2")]
    );
    // The PONG comes on alice's old connection: it clears the key's pending
    // PONG, so only bob is evicted after the wait.
    log.lines.clear();
    log.step(
        &mut d,
        661_000,
        Input::Data {
            conn: STREAM,
            peer: PEER,
            msg: Frame::Pong,
        },
    );
    log.run_until(&mut d, 690_001);
    let records: Vec<&str> = log
        .lines
        .iter()
        .filter(|(_, l)| !l.starts_with("send"))
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(records, vec!["pong cleared", "evict pong timeout"]);
    assert_eq!(d.registered(), 1);
    // alice's old connection closes: its cleanup unregisters the key, that
    // is the new peer, whose connection stays open.
    log.lines.clear();
    let out = log.step(
        &mut d,
        700_000,
        Input::Closed {
            conn: STREAM,
            peer: PEER,
        },
    );
    assert_eq!(
        log.lines,
        vec![(
            700_000,
            "disconnect peer closed (its connection stays open)".to_string()
        )]
    );
    assert_eq!(out.closes().collect::<Vec<_>>(), vec![STREAM]);
    assert_eq!(out.records().next().and_then(|r| r.peer), Some(NEW));
    assert_eq!(d.registered(), 0);
    // Never swept again: no PING, no hard eviction, though it stays silent.
    log.lines.clear();
    log.run_until(&mut d, 4 * 3600 * 1000);
    assert!(
        log.lines.iter().all(|(_, l)| l == "sweep"),
        "{:?}",
        log.lines
    );
}

/// Issue 18, point 8: joinmarket-rs counts `!orderbook` in its own bucket
/// of 3 a minute, apart from the 30 other PUBMSGs (`peer.rs` ~604-640);
/// Python has neither limit.
#[test]
fn rust_disconnects_a_4th_orderbook_within_a_minute_and_python_does_not() {
    let orderbook = Frame::PubMsg("alice!PUBLIC!orderbook".into());
    let offer = Frame::PubMsg("alice!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002".into());
    for profile in Profile::ALL {
        let (mut d, _) = directory(profile);
        let mut log = Log::default();
        // 20 offers and 3 `!orderbook`s in the first 30 s: within both
        // buckets; the 4th `!orderbook`, at 59 s, is one too many.
        for i in 0..20 {
            let msg = offer.clone();
            log.step(
                &mut d,
                1_000 + i * 1_000,
                Input::Data {
                    conn: STREAM,
                    peer: PEER,
                    msg,
                },
            );
        }
        for ms in [21_000, 22_000, 23_000, 59_000] {
            let msg = orderbook.clone();
            log.step(
                &mut d,
                ms,
                Input::Data {
                    conn: STREAM,
                    peer: PEER,
                    msg,
                },
            );
        }
        let records: Vec<&(u64, String)> = log
            .lines
            .iter()
            .filter(|(_, l)| !l.starts_with("send"))
            .collect();
        if profile == Profile::JoinmarketRs {
            assert_eq!(
                records,
                vec![&(
                    59_000,
                    "disconnect !orderbook rate limit exceeded".to_string()
                )]
            );
            assert_eq!(d.registered(), 0);
        } else {
            assert!(records.is_empty(), "{profile:?}: {records:?}");
            assert_eq!(d.registered(), 1);
        }
    }
}

/// Issue 18, point 7: HEAD's nick authentication (on when a directory id is
/// configured). REQUIRE_VERIFIED refuses a peer that does not negotiate it
/// with a rejection reply; a negotiating peer gets the reply and a
/// challenge, and must answer with a proof: another line is `malformed`,
/// silence past `nick_auth_timeout` is `expired` (`server.py`
/// `_perform_handshake`, `_perform_nick_auth`). A proof registers at once,
/// without the 50 ms sleep.
#[test]
fn head_nick_authentication_refuses_expires_and_registers() {
    use heartsim::models::joinmarket::{AuthCode, NickAuth};
    let with_auth = |nick_auth: bool| Frame::Handshake {
        nick: Arc::from("alice"),
        location: Arc::from(onion_for("alice")),
        ping: true,
        directory: false,
        nick_auth,
    };
    let run = |require: bool, hello: Frame, then: Option<Frame>| {
        let auth = NickAuth {
            require,
            timeout: heartsim::sim::Duration::from_secs(10),
        };
        let mut d = Directory::new(Profile::JoinmarketNg, Timers::default(), "dir")
            .with_nick_auth(Some(auth));
        let mut log = Log::default();
        log.step(&mut d, 0, Input::Start);
        log.hello(&mut d, 0, STREAM, PEER, hello);
        if let Some(msg) = then {
            log.step(
                &mut d,
                100,
                Input::Data {
                    conn: STREAM,
                    peer: PEER,
                    msg,
                },
            );
        }
        log.run_until(&mut d, 20_000);
        (log.lines, d.registered())
    };
    let reply = |accepted| format!("send {}", Frame::HandshakeReply { accepted });
    let challenge = format!("send {}", Frame::NickAuthChallenge);
    let result = |code| format!("send {}", Frame::NickAuthResult(code));

    let (log, n) = run(true, with_auth(false), None);
    assert_eq!(
        log,
        vec![
            (0, "reject verified nick authentication required".into()),
            (0, reply(false)),
        ]
    );
    assert_eq!(n, 0);

    let (log, n) = run(false, with_auth(true), Some(Frame::Ping));
    assert_eq!(
        log,
        vec![
            (0, reply(true)),
            (0, challenge.clone()),
            (
                100,
                "reject nick authentication payload was malformed".into()
            ),
            (100, result(AuthCode::Malformed)),
        ]
    );
    assert_eq!(n, 0);

    let (log, n) = run(false, with_auth(true), None);
    assert_eq!(
        log,
        vec![
            (0, reply(true)),
            (0, challenge.clone()),
            (10_000, "reject nick authentication timed out".into()),
            (10_000, result(AuthCode::Expired)),
        ]
    );
    assert_eq!(n, 0);

    let (log, n) = run(false, with_auth(true), Some(Frame::NickAuthProof));
    assert_eq!(
        log,
        vec![
            (0, reply(true)),
            (0, challenge),
            (100, "register (maker ping verified)".into()),
            (100, result(AuthCode::Ok)),
        ]
    );
    assert_eq!(n, 1);

    // PREFER_VERIFIED: a peer without nick_auth takes the unverified path,
    // 50 ms sleep included.
    let (log, n) = run(false, with_auth(false), None);
    assert_eq!(
        log,
        vec![(0, reply(true)), (50, "register (maker ping)".into())]
    );
    assert_eq!(n, 1);
}

/// A reset during joinmarket-ng's 50 ms sleep: asyncio's `readuntil`
/// raises the stored connection error before it reads its buffer, so the
/// PING that came before the reset is never read (an EOF, by contrast,
/// comes after the buffered lines: see the test above).
#[test]
fn a_reset_during_the_50ms_sleep_drops_the_lines_before_it() {
    for profile in [Profile::JoinmarketNg, Profile::JoinmarketNgEb812d4c] {
        let mut d = Directory::new(profile, Timers::default(), "dir");
        let mut log = Log::default();
        log.step(&mut d, 0, Input::Start);
        log.hello(&mut d, 0, STREAM, PEER, handshake(true));
        let ping = Input::Data {
            conn: STREAM,
            peer: PEER,
            msg: Frame::Ping,
        };
        log.step(&mut d, 10, ping);
        let reset = Input::Reset {
            conn: STREAM,
            peer: PEER,
            error: heartsim::sim::ConnError::Reset,
        };
        log.step(&mut d, 20, reset);
        log.settle(&mut d);
        let records: Vec<&(u64, String)> = log.lines.iter().skip(1).collect();
        assert_eq!(
            records,
            vec![
                &(50, "register (maker ping)".to_string()),
                &(50, "disconnect connection reset".to_string()),
            ],
            "{profile:?}: no PONG"
        );
    }
}

/// Issue 18, point 4: joinmarket-ng follows every departure with a
/// "disconnected" PEERLIST line to every other registered peer, awaited by
/// whoever evicted (HEAD: unregister, broadcast, then close; eb812d4c:
/// broadcast, then unregister and close; `server.py` `_evict_peer`,
/// `_remove_owned_peer_state`; `server.py@eb8` `_evict_peer`). eb812d4c
/// looks the departed peer up by location, so a taker's departure goes to
/// no one. joinmarket-rs's task broadcasts a maker's departure on its
/// channel as it ends, awaited by no one.
#[test]
fn a_departure_is_broadcast_to_the_other_peers_before_the_close() {
    let peers = [
        (STREAM, PEER, "alice", true),
        (ConnId(2), NodeId(2), "bob", true),
        (ConnId(3), NodeId(3), "tom", false),
    ];
    for profile in Profile::ALL {
        let mut d = Directory::new(profile, Timers::default(), "dir");
        let mut log = Log::default();
        log.step(&mut d, 0, Input::Start);
        for (conn, peer, nick, maker) in peers {
            let location = if maker {
                onion_for(nick)
            } else {
                "NOT-SERVING-ONION".to_string()
            };
            let hello = Frame::Handshake {
                nick: Arc::from(nick),
                location: Arc::from(location),
                ping: true,
                directory: false,
                nick_auth: false,
            };
            log.hello(&mut d, 0, conn, peer, hello);
        }
        log.settle(&mut d);
        log.lines.clear();
        // alice's connection ends (EOF): her handler cleans up.
        let out = log.step(
            &mut d,
            1_000,
            Input::Closed {
                conn: STREAM,
                peer: PEER,
            },
        );
        let lines: Vec<&str> = log.lines.iter().map(|(_, l)| l.as_str()).collect();
        let entry = format!(
            "send {}",
            Frame::PeerList {
                nick: Arc::from("alice"),
                location: Arc::from(onion_for("alice")),
            }
        );
        match profile {
            Profile::JoinmarketRs => {
                // The task ends: deregistered, dropped, and a maker's
                // departure goes out on the broadcast channel, which every
                // other task writes (`peer.rs` ~465-478).
                assert_eq!(
                    lines,
                    vec![
                        "disconnect peer closed".to_string(),
                        format!("{entry} on 2"),
                        format!("{entry} on 3"),
                    ]
                );
                assert_eq!(out.closes().collect::<Vec<_>>(), vec![STREAM]);
            }
            _ => {
                // To bob and tom (awaited, answered at once by the log),
                // then the close.
                assert_eq!(
                    lines,
                    vec![
                        "disconnect peer closed".to_string(),
                        format!("{entry} on 2"),
                        format!("{entry} on 3"),
                    ],
                    "{profile:?}"
                );
            }
        }
        assert_eq!(d.registered(), 2, "{profile:?}");
        // tom (a taker) leaves: eb812d4c finds no one to tell.
        log.lines.clear();
        log.step(
            &mut d,
            2_000,
            Input::Closed {
                conn: ConnId(3),
                peer: NodeId(3),
            },
        );
        let sends = log
            .lines
            .iter()
            .filter(|(_, l)| l.starts_with("send"))
            .count();
        let expected = match profile {
            Profile::JoinmarketNg => 1,
            Profile::JoinmarketNgEb812d4c | Profile::JoinmarketRs => 0,
        };
        assert_eq!(sends, expected, "{profile:?}");
    }
}

/// Point 4: a PUBMSG is relayed to every other registered peer by its
/// sender's handler, which reads nothing more until the relay's writes are
/// done (`_handle_public_message`, awaited).
#[test]
fn a_pubmsg_is_relayed_and_holds_its_senders_next_lines_until_written() {
    let mut d = Directory::new(Profile::JoinmarketNg, Timers::default(), "dir");
    let mut out = Outbox::new(NodeId(0));
    let start =
        |d: &mut Directory, out: &mut Outbox<Frame>, ms, input| d.handle(at_ms(ms), input, out);
    start(&mut d, &mut out, 0, Input::Start);
    for (conn, peer, nick) in [(STREAM, PEER, "alice"), (ConnId(2), NodeId(2), "bob")] {
        start(&mut d, &mut out, 0, Input::Accepted { conn, peer });
        let hello = Frame::Handshake {
            nick: Arc::from(nick),
            location: Arc::from(onion_for(nick)),
            ping: true,
            directory: false,
            nick_auth: false,
        };
        start(
            &mut d,
            &mut out,
            0,
            Input::Data {
                conn,
                peer,
                msg: hello,
            },
        );
    }
    while let Some(dl) = d.poll_timeout().filter(|t| t.at < at(1).mono) {
        start(&mut d, &mut out, dl.at.as_us() / 1000, Input::Timeout);
    }
    let offer = Frame::PubMsg("alice!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002".into());
    let mut relay = Outbox::new(NodeId(0));
    d.handle(
        at_ms(1_000),
        Input::Data {
            conn: STREAM,
            peer: PEER,
            msg: offer.clone(),
        },
        &mut relay,
    );
    let sent: Vec<_> = relay.sends().map(|(to, m, t)| (to, m.clone(), t)).collect();
    assert_eq!(sent.len(), 1, "to bob only");
    let (to, msg, token) = sent[0].clone();
    assert_eq!((to, msg), (heartsim::sim::Dest::Conn(ConnId(2)), offer));
    // alice PINGs meanwhile: held, unanswered, until bob's write is done.
    let mut held = Outbox::new(NodeId(0));
    d.handle(
        at_ms(2_000),
        Input::Data {
            conn: STREAM,
            peer: PEER,
            msg: Frame::Ping,
        },
        &mut held,
    );
    assert_eq!(held.sends().count(), 0);
    let mut done = Outbox::new(NodeId(0));
    let token = token.expect("awaited");
    d.handle(
        at_ms(3_000),
        Input::SendDone {
            to,
            token,
            result: Ok(()),
        },
        &mut done,
    );
    let replies: Vec<_> = done.sends().map(|(to, m, _)| (to, m.clone())).collect();
    assert_eq!(
        replies,
        vec![(heartsim::sim::Dest::Conn(STREAM), Frame::Pong)]
    );
}

/// From the point-4 audit: `_handle_ping` awaits its PONG write (HEAD
/// bounds it by 30 s and only logs a failure), and the handler reads
/// nothing meanwhile: a PUBMSG that comes during a blocked PONG is relayed
/// only once the write gives up.
#[test]
fn head_awaits_its_pong_and_reads_nothing_meanwhile() {
    let mut d = Directory::new(Profile::JoinmarketNg, Timers::default(), "dir");
    let mut out = Outbox::new(NodeId(0));
    d.handle(at_ms(0), Input::Start, &mut out);
    for (conn, peer, nick) in [(STREAM, PEER, "alice"), (ConnId(2), NodeId(2), "bob")] {
        d.handle(at_ms(0), Input::Accepted { conn, peer }, &mut out);
        let hello = Frame::Handshake {
            nick: Arc::from(nick),
            location: Arc::from(onion_for(nick)),
            ping: true,
            directory: false,
            nick_auth: false,
        };
        d.handle(
            at_ms(0),
            Input::Data {
                conn,
                peer,
                msg: hello,
            },
            &mut out,
        );
    }
    while let Some(dl) = d.poll_timeout().filter(|t| t.at < at(1).mono) {
        d.handle(at_ms(dl.at.as_us() / 1000), Input::Timeout, &mut out);
    }
    let step = |d: &mut Directory, ms, input| {
        let mut o = Outbox::new(NodeId(0));
        d.handle(at_ms(ms), input, &mut o);
        o.sends()
            .map(|(to, m, t)| (to, m.clone(), t.is_some()))
            .collect::<Vec<_>>()
    };
    // alice PINGs: the PONG is an awaited write (never answered here: her
    // buffers are full).
    let pong = step(
        &mut d,
        1_000,
        Input::Data {
            conn: STREAM,
            peer: PEER,
            msg: Frame::Ping,
        },
    );
    assert_eq!(
        pong,
        vec![(heartsim::sim::Dest::Conn(STREAM), Frame::Pong, true)]
    );
    // Her offer at 10 s waits unread: no relay to bob.
    let offer = Frame::PubMsg("alice!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002".into());
    let relay = step(
        &mut d,
        10_000,
        Input::Data {
            conn: STREAM,
            peer: PEER,
            msg: offer.clone(),
        },
    );
    assert!(relay.is_empty(), "{relay:?}");
    // 31 s: `wait_for` gives up on the PONG (logged only); the handler reads
    // the offer and relays it.
    let deadline = d.poll_timeout().expect("the PONG's bound");
    assert_eq!(deadline.at, at_ms(31_000).mono);
    let relay = step(&mut d, 31_000, Input::Timeout);
    assert_eq!(
        relay,
        vec![(heartsim::sim::Dest::Conn(ConnId(2)), offer, true)]
    );
    assert_eq!(d.registered(), 2, "a failed PONG drops no one");
}

/// HEAD's per-nick owner lock (`server.py` `_owner_lock`, ~435-440): a
/// handshaked directory with alice (stalled: her buffers are full) and
/// bob, both ping-capable, on connections 1 and 2.
fn head_with_stalled_alice() -> (Directory, Log) {
    let mut d = Directory::new(Profile::JoinmarketNg, Timers::default(), "dir");
    let mut log = Log {
        stalled: vec![STREAM],
        ..Log::default()
    };
    log.step(&mut d, 0, Input::Start);
    for (conn, peer, nick) in [(STREAM, PEER, "alice"), (ConnId(2), NodeId(2), "bob")] {
        let hello = Frame::Handshake {
            nick: Arc::from(nick),
            location: Arc::from(onion_for(nick)),
            ping: true,
            directory: false,
            nick_auth: false,
        };
        log.hello(&mut d, 0, conn, peer, hello);
    }
    log.settle(&mut d);
    log.lines.clear();
    (d, log)
}

fn data(conn: ConnId, peer: NodeId, msg: Frame) -> Input<Frame> {
    Input::Data { conn, peer, msg }
}

/// `_send_to_peer` holds the nick's lock for its whole write, 30 s bound
/// included, and the bound starts only with the lock: a relay to alice
/// queued behind her blocked PONG starts when the PONG gives up, and is
/// given up 30 s after that, not after it was asked for.
#[test]
fn head_writes_to_one_nick_wait_for_each_other() {
    let (mut d, mut log) = head_with_stalled_alice();
    // 1 s: alice PINGs; the PONG blocks.
    log.step(&mut d, 1_000, data(STREAM, PEER, Frame::Ping));
    // 10 s: bob's offer is relayed to alice: the write waits for her lock.
    let offer = Frame::PubMsg("bob!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002".into());
    log.step(&mut d, 10_000, data(ConnId(2), NodeId(2), offer.clone()));
    assert_eq!(
        log.lines,
        vec![(1_000, format!("send {} on 1", Frame::Pong))]
    );
    // 31 s: the PONG gives up; the relay has the lock and writes.
    log.run_until(&mut d, 31_001);
    assert_eq!(
        log.lines.last(),
        Some(&(31_000, format!("send {offer} on 1"))),
        "{:?}",
        log.lines
    );
    // Its own 30 s: it gives up at 61 s, and alice goes then.
    log.run_until(&mut d, 61_001);
    let gone: Vec<_> = log
        .lines
        .iter()
        .filter(|(_, l)| l.starts_with("disc"))
        .collect();
    assert_eq!(gone, vec![&(61_000, "disconnect send failed:".to_string())]);
    assert_eq!(d.registered(), 1);
}

/// `_register_peer` takes the nick's lock: a second handshake for alice's
/// nick, while a write to alice is blocked, is refused only when that
/// write lets the lock go, and reads nothing meanwhile.
#[test]
fn head_a_duplicate_nick_waits_for_the_owners_lock() {
    let (mut d, mut log) = head_with_stalled_alice();
    log.step(&mut d, 1_000, data(STREAM, PEER, Frame::Ping));
    let again = ConnId(3);
    log.hello(&mut d, 5_000, again, PEER, handshake(true));
    log.step(&mut d, 6_000, data(again, PEER, Frame::Ping));
    assert_eq!(log.lines.len(), 1, "{:?}", log.lines);
    log.run_until(&mut d, 31_001);
    let rejection = Frame::HandshakeReply { accepted: false };
    assert_eq!(
        log.lines[1..],
        [
            (
                31_000,
                "reject Peer nick already registered: alice".to_string()
            ),
            (31_000, format!("send {rejection}")),
        ]
    );
    assert_eq!(d.registered(), 2);
}

/// A reset wakes the reset connection's reader before the blocked writer
/// (`connection_lost` sets the reader's exception first): alice's own
/// handler queues its cleanup for her lock before bob's failed relay lets
/// it go, so she leaves by "connection reset", and `_handle_send_failed`
/// then finds no owner.
#[test]
fn head_a_reset_under_a_blocked_write_is_cleaned_up_by_its_own_handler() {
    let (mut d, mut log) = head_with_stalled_alice();
    let offer = Frame::PubMsg("bob!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002".into());
    log.step(&mut d, 1_000, data(ConnId(2), NodeId(2), offer.clone()));
    assert_eq!(log.lines, vec![(1_000, format!("send {offer} on 1"))]);
    let reset = Input::Reset {
        conn: STREAM,
        peer: PEER,
        error: heartsim::sim::ConnError::Reset,
    };
    log.step(&mut d, 2_000, reset);
    let gone: Vec<_> = log
        .lines
        .iter()
        .filter(|(_, l)| l.starts_with("disc"))
        .collect();
    assert_eq!(
        gone,
        vec![&(2_000, "disconnect connection reset".to_string())]
    );
    assert_eq!(d.registered(), 1);
}

/// `_close_displaced_connections` bounds the displaced connection's close
/// by min(`nick_auth_timeout`, 5 s): a verified reconnect whose old
/// connection still has an abandoned PONG queued registers 5 s after its
/// proof, not when the old buffer drains.
#[test]
fn head_a_displaced_close_is_given_up_after_5s() {
    use heartsim::models::joinmarket::{AuthCode, NickAuth};
    let auth = NickAuth {
        require: false,
        timeout: heartsim::sim::Duration::from_secs(30),
    };
    let mut d =
        Directory::new(Profile::JoinmarketNg, Timers::default(), "dir").with_nick_auth(Some(auth));
    let mut log = Log {
        stalled: vec![STREAM],
        ..Log::default()
    };
    let hello = Frame::Handshake {
        nick: Arc::from("alice"),
        location: Arc::from(onion_for("alice")),
        ping: true,
        directory: false,
        nick_auth: true,
    };
    log.step(&mut d, 0, Input::Start);
    log.hello(&mut d, 0, STREAM, PEER, hello.clone());
    log.step(&mut d, 10, data(STREAM, PEER, Frame::NickAuthProof));
    // 1 s: a PONG to alice blocks; 31 s: abandoned, its bytes still queued.
    log.step(&mut d, 1_000, data(STREAM, PEER, Frame::Ping));
    log.run_until(&mut d, 31_001);
    // 40 s: alice reconnects and proves her nick.
    let again = ConnId(3);
    log.hello(&mut d, 40_000, again, PEER, hello);
    log.step(&mut d, 40_010, data(again, PEER, Frame::NickAuthProof));
    log.run_until(&mut d, 60_000);
    let ok = format!("send {}", Frame::NickAuthResult(AuthCode::Ok));
    let when: Vec<u64> = log
        .lines
        .iter()
        .filter(|(_, l)| *l == ok)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(when, vec![10, 45_010], "{:?}", log.lines);
    assert_eq!(d.registered(), 1);
}

/// HEAD: an evicted peer's handler still reads. A line from it during its
/// eviction's broadcast (blocked on a stalled peer) makes the handler break
/// and close the connection at once (`_cleanup_peer`); the sweep's close,
/// after the broadcast, finds it gone.
#[test]
fn head_an_evicted_peer_that_speaks_during_its_broadcast_is_closed_by_its_handler() {
    let timers = Timers {
        sweep_interval: heartsim::sim::Duration::from_secs(10),
        idle_threshold: heartsim::sim::Duration::from_secs(30),
        hard_evict: heartsim::sim::Duration::from_secs(110),
        pong_wait: heartsim::sim::Duration::from_secs(5),
    };
    let mut d = Directory::new(Profile::JoinmarketNg, timers, "dir");
    // alice, a non-ping taker, is stalled; bob pings but never answers.
    let mut log = Log {
        stalled: vec![STREAM],
        closes: true,
        ..Log::default()
    };
    log.step(&mut d, 0, Input::Start);
    let bob = (ConnId(2), NodeId(2));
    for (conn, peer, nick, ping, location) in [
        (
            STREAM,
            PEER,
            "alice",
            false,
            "NOT-SERVING-ONION".to_string(),
        ),
        (bob.0, bob.1, "bob", true, onion_for("bob")),
    ] {
        let hello = Frame::Handshake {
            nick: Arc::from(nick),
            location: Arc::from(location.as_str()),
            ping,
            directory: false,
            nick_auth: false,
        };
        log.hello(&mut d, 0, conn, peer, hello);
    }
    // 40 s: bob is PINGed; 45 s: evicted, his departure blocks on alice.
    log.run_until(&mut d, 46_000);
    log.lines.retain(|(t, _)| *t >= 45_000);
    assert_eq!(
        log.lines,
        vec![
            (45_000, "evict pong timeout".to_string()),
            (
                45_000,
                format!(
                    "send {} on 1",
                    Frame::PeerList {
                        nick: Arc::from("bob"),
                        location: Arc::from(onion_for("bob").as_str()),
                    }
                )
            ),
        ]
    );
    // 50 s: bob says something: his handler closes his connection.
    log.step(&mut d, 50_000, data(bob.0, bob.1, Frame::Ping));
    assert_eq!(log.lines.last(), Some(&(50_000, "close 2".to_string())));
    // 75 s: the broadcast gives up: alice goes; bob is not closed again.
    log.run_until(&mut d, 76_000);
    let closes: Vec<_> = log
        .lines
        .iter()
        .filter(|(_, l)| l.starts_with("close"))
        .collect();
    assert_eq!(
        closes,
        vec![&(50_000, "close 2".to_string())],
        "{:?}",
        log.lines
    );
    assert!(log
        .lines
        .contains(&(75_000, "disconnect send failed:".to_string())));
}

/// eb812d4c unregisters by key after a departure's broadcast, and
/// `_evict_peer` closes whatever connection the key maps to then
/// (`server.py@eb8` ~414-440): a maker that reconnects while its eviction's
/// broadcast is blocked on a stalled peer loses its new registration and
/// connection when the broadcast is done, and its old connection, already
/// replaced, stays open.
#[test]
fn eb812d4c_an_eviction_unregisters_and_closes_whoever_holds_the_key_by_then() {
    let timers = Timers {
        sweep_interval: heartsim::sim::Duration::from_secs(10),
        idle_threshold: heartsim::sim::Duration::from_secs(30),
        hard_evict: heartsim::sim::Duration::from_secs(110),
        pong_wait: heartsim::sim::Duration::from_secs(5),
    };
    let mut d = Directory::new(Profile::JoinmarketNgEb812d4c, timers, "dir");
    // alice, a non-ping taker, is stalled; bob, a ping maker, is silent.
    let mut log = Log {
        stalled: vec![STREAM],
        closes: true,
        ..Log::default()
    };
    log.step(&mut d, 0, Input::Start);
    let bob_hello = || Frame::Handshake {
        nick: Arc::from("bob"),
        location: Arc::from(onion_for("bob").as_str()),
        ping: true,
        directory: false,
        nick_auth: false,
    };
    let alice = Frame::Handshake {
        nick: Arc::from("alice"),
        location: Arc::from("NOT-SERVING-ONION"),
        ping: false,
        directory: false,
        nick_auth: false,
    };
    log.hello(&mut d, 0, STREAM, PEER, alice);
    log.hello(&mut d, 0, ConnId(2), NodeId(2), bob_hello());
    // 45 s: bob evicted; his departure's write to alice blocks.
    log.run_until(&mut d, 46_000);
    assert!(log
        .lines
        .contains(&(45_000, "evict pong timeout".to_string())));
    // 50 s: bob reconnects; 50.05 s: registered over the old entry.
    log.hello(&mut d, 50_000, ConnId(3), NodeId(2), bob_hello());
    log.run_until(&mut d, 51_000);
    assert!(
        log.lines
            .contains(&(50_050, "register (maker ping)".to_string())),
        "{:?}",
        log.lines
    );
    assert_eq!(d.registered(), 2);
    // 60 s: alice drains: the eviction goes on by key.
    log.lines.clear();
    log.release(&mut d, 60_000, STREAM);
    assert_eq!(
        log.lines,
        vec![
            (60_000, "evict pong timeout".to_string()),
            (60_000, "close 3".to_string()),
        ]
    );
    assert_eq!(d.registered(), 1, "only alice is left");
}

/// eb812d4c's sweep holds keys, not connections (`heartbeat.py@eb8`
/// ~156-173): a peer that reconnects while the sweep is blocked in an
/// earlier PING is PINGed on its new connection when the sweep gets to its
/// key.
#[test]
fn eb812d4c_a_sweep_blocked_in_a_write_pings_a_key_taken_over_meanwhile() {
    let timers = Timers {
        sweep_interval: heartsim::sim::Duration::from_secs(10),
        idle_threshold: heartsim::sim::Duration::from_secs(30),
        hard_evict: heartsim::sim::Duration::from_secs(110),
        pong_wait: heartsim::sim::Duration::from_secs(5),
    };
    let mut d = Directory::new(Profile::JoinmarketNgEb812d4c, timers, "dir");
    let mut log = Log {
        stalled: vec![STREAM],
        ..Log::default()
    };
    log.step(&mut d, 0, Input::Start);
    let hello = |nick: &str| Frame::Handshake {
        nick: Arc::from(nick),
        location: Arc::from(onion_for(nick).as_str()),
        ping: true,
        directory: false,
        nick_auth: false,
    };
    log.hello(&mut d, 0, STREAM, PEER, hello("alice"));
    log.hello(&mut d, 0, ConnId(2), NodeId(2), hello("bob"));
    // 40 s: alice's PING blocks the sweep before it gets to bob.
    log.run_until(&mut d, 41_000);
    assert_eq!(
        log.lines.last(),
        Some(&(40_000, format!("send {} on 1", Frame::Ping)))
    );
    // 42 s: bob reconnects, registered over his old entry at 42.05 s.
    log.hello(&mut d, 42_000, ConnId(3), NodeId(2), hello("bob"));
    log.run_until(&mut d, 43_000);
    // 50 s: alice drains; the sweep PINGs bob's key on its new connection.
    log.lines.clear();
    log.release(&mut d, 50_000, STREAM);
    assert_eq!(
        log.lines,
        vec![
            (50_000, "ping".to_string()),
            (50_000, format!("send {} on 3", Frame::Ping)),
            (50_000, "wait (2 pinged)".to_string()),
        ]
    );
}

/// HEAD's `_handle_send_failed` runs inside the failed write's `_safe_send`
/// task, beside the rest of its batch (`asyncio.gather`): when carol's
/// relay write gives up while alice's is still blocked, carol's departure
/// is broadcast at once, not after alice's write is done.
#[test]
fn head_a_failed_write_is_handled_beside_the_rest_of_its_batch() {
    let mut d = Directory::new(Profile::JoinmarketNg, Timers::default(), "dir");
    let (alice, bob, carol, dave) = (STREAM, ConnId(2), ConnId(3), ConnId(4));
    let mut log = Log {
        stalled: vec![alice, carol],
        ..Log::default()
    };
    log.step(&mut d, 0, Input::Start);
    for (conn, nick) in [
        (alice, "alice"),
        (bob, "bob"),
        (carol, "carol"),
        (dave, "dave"),
    ] {
        let hello = Frame::Handshake {
            nick: Arc::from(nick),
            location: Arc::from("NOT-SERVING-ONION"),
            ping: true,
            directory: false,
            nick_auth: false,
        };
        log.hello(&mut d, 0, conn, NodeId(conn.0 as usize), hello);
    }
    log.settle(&mut d);
    // 0.5 s: alice PINGs; her PONG blocks and holds her lock until 30.5 s.
    log.step(&mut d, 500, data(alice, NodeId(1), Frame::Ping));
    // 1 s: bob's offer is relayed: to alice (waits for her lock), carol
    // (blocks until 31 s), dave (done).
    let offer = Frame::PubMsg("bob!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002".into());
    log.step(&mut d, 1_000, data(bob, NodeId(2), offer));
    // 30.5 s: alice's relay write starts (until 60.5 s); 31 s: carol's
    // gives up, and her departure goes to dave (and bob) at once.
    log.run_until(&mut d, 31_001);
    let gone = Frame::PeerList {
        nick: Arc::from("carol"),
        location: Arc::from("NOT-SERVING-ONION"),
    };
    let to_dave = format!("send {gone} on 4");
    assert!(
        log.lines
            .contains(&(31_000, "disconnect send failed:".to_string())),
        "{:?}",
        log.lines
    );
    assert!(log.lines.contains(&(31_000, to_dave)), "{:?}", log.lines);
}

/// `_batched_broadcast_iter` fills each batch of 50 as it goes, passing
/// over targets that left meanwhile: with 101 targets and one gone during
/// the first batch, the second batch holds the last 50 live ones (the
/// 101st included), not 49 and a third batch of one.
#[test]
fn head_broadcast_batches_are_filled_as_they_come() {
    let mut d = Directory::new(Profile::JoinmarketNg, Timers::default(), "dir");
    let conn = |i: u64| ConnId(i + 1);
    let mut log = Log {
        stalled: vec![conn(1), conn(51)],
        ..Log::default()
    };
    log.step(&mut d, 0, Input::Start);
    for i in 0..102 {
        let hello = Frame::Handshake {
            nick: Arc::from(format!("p{i}").as_str()),
            location: Arc::from("NOT-SERVING-ONION"),
            ping: true,
            directory: false,
            nick_auth: false,
        };
        log.hello(&mut d, 0, conn(i), NodeId(i as usize + 1), hello);
    }
    log.settle(&mut d);
    log.lines.clear();
    // 1 s: p0's offer goes to p1..p50 first; p1's write blocks the batch.
    let offer = Frame::PubMsg("p0!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002".into());
    log.step(&mut d, 1_000, data(conn(0), NodeId(1), offer.clone()));
    assert_eq!(log.lines.len(), 50, "{:?}", log.lines);
    // 2 s: p60 leaves.
    let eof = Input::Closed {
        conn: conn(60),
        peer: NodeId(61),
    };
    log.step(&mut d, 2_000, eof);
    // 5 s: p1 drains: the second batch is p51..p101 but p60, at once.
    log.lines.clear();
    log.release(&mut d, 5_000, conn(1));
    let relayed: Vec<u64> = log
        .lines
        .iter()
        .filter(|(_, l)| l.starts_with(&format!("send {offer} on ")))
        .map(|(_, l)| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap() - 1)
        .collect();
    let want: Vec<u64> = (51..102).filter(|&i| i != 60).collect();
    assert_eq!(relayed, want);
}

/// joinmarket-rs relays a PUBMSG through the router's broadcast channel
/// (`broadcast_pubmsg` -> `router.broadcast`): every other peer's task
/// writes it, the sender's own skips it, and the sender reads on. A task
/// blocked in a write takes nothing more (its lines wait too) until the
/// write returns; more than 256 broadcasts behind, it sees
/// `RecvError::Lagged` and ends (`peer.rs` ~415-437).
#[test]
fn rust_relays_through_each_tasks_broadcast_channel_and_a_lagging_task_ends() {
    // 1 + 256 fit (one taken, 256 waiting); one more and the task lags.
    for total in [257, 258] {
        let mut d = Directory::new(Profile::JoinmarketRs, Timers::default(), "dir");
        let bob = ConnId(100);
        let mut log = Log {
            stalled: vec![bob],
            ..Log::default()
        };
        log.step(&mut d, 0, Input::Start);
        let makers: Vec<ConnId> = (1..=9).map(ConnId).collect();
        for &conn in &makers {
            let nick = format!("m{}", conn.0);
            let hello = Frame::Handshake {
                nick: Arc::from(nick.as_str()),
                location: Arc::from(onion_for(&nick).as_str()),
                ping: true,
                directory: false,
                nick_auth: false,
            };
            log.hello(&mut d, 0, conn, NodeId(conn.0 as usize), hello);
        }
        let hello = Frame::Handshake {
            nick: Arc::from("bob"),
            location: Arc::from("NOT-SERVING-ONION"),
            ping: true,
            directory: false,
            nick_auth: false,
        };
        log.hello(&mut d, 0, bob, NodeId(100), hello);
        log.lines.clear();
        let offer = |conn: ConnId| {
            Frame::PubMsg(format!("m{}!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002", conn.0).into())
        };
        // 1 s: m1's offer goes to m2..m9 and to bob, whose write blocks.
        log.step(&mut d, 1_000, data(makers[0], NodeId(1), offer(makers[0])));
        let to: Vec<&str> = log
            .lines
            .iter()
            .map(|(_, l)| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(to, ["2", "3", "4", "5", "6", "7", "8", "9", "100"]);
        // bob's PING waits unanswered behind the blocked write.
        log.lines.clear();
        log.step(&mut d, 1_500, data(bob, NodeId(100), Frame::Ping));
        assert!(log.lines.is_empty(), "{:?}", log.lines);
        // 256 more broadcasts queue behind it; the 257th is one too many.
        let mut sent = 1;
        'outer: for round in 0..29 {
            for &conn in &makers {
                if sent == total {
                    break 'outer;
                }
                log.step(
                    &mut d,
                    2_000 + round,
                    data(conn, NodeId(conn.0 as usize), offer(conn)),
                );
                sent += 1;
            }
        }
        assert_eq!(d.registered(), 10, "no one is gone yet");
        log.lines.clear();
        log.release(&mut d, 5_000, bob);
        let lagged = (
            5_000,
            "disconnect lagged on the broadcast channel".to_string(),
        );
        if total == 258 {
            assert_eq!(log.lines, vec![lagged]);
            assert_eq!(d.registered(), 9);
        } else {
            assert!(!log.lines.contains(&lagged), "{total}");
            assert_eq!(d.registered(), 10, "{total}");
        }
    }
}

/// joinmarket-ng's per-connection token bucket (`jmcore/rate_limiter.py`;
/// `DirectoryServerSettings`: 500 a second, bursts of 1000, no disconnect):
/// the 1001st line of an instant is dropped (after stamping `last_seen`),
/// and 2 ms later one more token has come; HEAD parses before it checks
/// the bucket, eb812d4c after. joinmarket-rs has no such bucket (its own
/// PING limit is per minute).
#[test]
fn python_drops_lines_past_its_token_bucket() {
    for profile in [Profile::JoinmarketNg, Profile::JoinmarketNgEb812d4c] {
        let (mut d, _) = directory_after(profile, handshake(true));
        let mut log = Log::default();
        let pongs = |log: &Log| {
            log.lines
                .iter()
                .filter(|(_, l)| l.starts_with(&format!("send {}", Frame::Pong)))
                .count()
        };
        for _ in 0..1001 {
            log.step(&mut d, 1_000, data(STREAM, PEER, Frame::Ping));
        }
        assert_eq!(pongs(&log), 1000, "{profile:?}");
        log.step(&mut d, 1_001, data(STREAM, PEER, Frame::Ping));
        assert_eq!(pongs(&log), 1000, "{profile:?}: half a token");
        log.step(&mut d, 1_002, data(STREAM, PEER, Frame::Ping));
        assert_eq!(pongs(&log), 1001, "{profile:?}: a whole token");
        // A malformed line with the bucket empty: HEAD parses first and
        // disconnects; eb812d4c rate-limits first and drops it.
        log.step(&mut d, 1_002, data(STREAM, PEER, Frame::Malformed));
        let gone = log
            .lines
            .iter()
            .any(|(_, l)| l == "disconnect malformed line");
        assert_eq!(gone, profile == Profile::JoinmarketNg, "{profile:?}");
        assert_eq!(d.registered(), usize::from(!gone), "{profile:?}");
    }
}

//! Simulated JoinMarket peers: the workload around the directory.
//!
//! A peer connects to the directory on start and handshakes on that TCP
//! connection, then behaves as the scenario says. When the connection ends
//! (the directory closed it, it was reset, or the connect failed) it
//! reconnects on a new one, if the scenario says so. It is a machine like
//! the directory, so crashes, restarts and partitions apply to it unchanged.

use std::sync::Arc;

use heartsim_sim::{ConnId, Deadline, Duration, Input, NodeId, Now, Outbox, Timestamp};

use super::{kind, Frame, NOT_SERVING_ONION};

/// What a line from a chatty peer looks like to the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatLine {
    /// An ordinary PUBMSG (an offer announcement).
    PubMsg,
    /// A line that does not parse: refreshes `last_seen` all the same.
    Malformed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// PONG to every PING; a maker re-announces its offers on `!orderbook`.
    Responsive,
    /// Connected, never says anything.
    Silent,
    /// Sends a line every `every`, first one `every` after connecting; never
    /// answers a PING, so its traffic refreshes `last_seen` without clearing
    /// a pending PONG.
    Chatty { every: Duration, line: ChatLine },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    pub directory: NodeId,
    pub nick: Arc<str>,
    pub maker: bool,
    /// Handshake `features["ping"] = true`.
    pub ping: bool,
    /// Handshake as a directory node.
    pub is_directory: bool,
    /// Handshake `features["nick_auth"] = true`: answers the directory's
    /// nick-authentication challenge with a proof.
    pub nick_auth: bool,
    /// The handshake's `location-string` (see [`PeerSpec::default_location`]).
    pub location: Arc<str>,
    pub behaviour: Behaviour,
    /// Send the directory a PING this often (first one after one period).
    pub ping_directory_every: Option<Duration>,
    /// After the connection ends (closed by the directory, reset, or a
    /// failed connect), connect and handshake again this much later.
    pub reconnect_after: Option<Duration>,
}

impl PeerSpec {
    /// What a peer says in its handshake unless the scenario sets
    /// `location`: a valid v3 onion derived from the nick for a maker,
    /// `NOT-SERVING-ONION` for a taker.
    pub fn default_location(nick: &str, maker: bool) -> Arc<str> {
        if maker {
            super::location::onion_for(nick).into()
        } else {
            NOT_SERVING_ONION.into()
        }
    }
}

#[derive(Debug)]
pub struct Peer {
    spec: Arc<PeerSpec>,
    /// The offer a maker re-announces on `!orderbook`, built once.
    offer: Frame,
    /// The connection to the directory, from connect until it ends.
    conn: Option<ConnId>,
    next_chat: Option<Timestamp>,
    next_ping: Option<Timestamp>,
    reconnect_at: Option<Timestamp>,
}

impl Peer {
    pub fn new(spec: Arc<PeerSpec>) -> Self {
        let offer = format!("{}!PUBLIC!sw0absoffer 0 27300 1000000 0 0.0002", spec.nick);
        Peer {
            offer: Frame::PubMsg(offer.into()),
            spec,
            conn: None,
            next_chat: None,
            next_ping: None,
            reconnect_at: None,
        }
    }

    /// Connect and write the handshake (it goes out once connected).
    fn connect(&mut self, now: Now, out: &mut Outbox<Frame>) {
        let conn = out.connect(self.spec.directory);
        out.send(
            conn,
            Frame::Handshake {
                nick: self.spec.nick.clone(),
                location: self.spec.location.clone(),
                ping: self.spec.ping,
                directory: self.spec.is_directory,
                nick_auth: self.spec.nick_auth,
            },
        );
        self.conn = Some(conn);
        self.reconnect_at = None;
        self.next_chat = match self.spec.behaviour {
            Behaviour::Chatty { every, .. } => Some(now.mono + every),
            _ => None,
        };
        self.next_ping = self.spec.ping_directory_every.map(|d| now.mono + d);
    }

    /// The connection is over: stop talking, and reconnect later if the
    /// scenario says so.
    fn disconnected(&mut self, now: Now) {
        self.conn = None;
        self.next_chat = None;
        self.next_ping = None;
        self.reconnect_at = self.spec.reconnect_after.map(|d| now.mono + d);
    }

    pub fn handle(&mut self, now: Now, input: Input<Frame>, out: &mut Outbox<Frame>) {
        let dir = self.spec.directory;
        match input {
            Input::Start => self.connect(now, out),
            // The process exits; its kernel closes the connection (FIN).
            Input::Stop => self.conn = None,
            Input::Data { conn, msg, .. } if Some(conn) == self.conn => match msg {
                // The client signs the challenge at once (whatever its
                // heartbeat behaviour: that is its protocol stack).
                Frame::NickAuthChallenge if self.spec.nick_auth => {
                    out.send(conn, Frame::NickAuthProof);
                }
                Frame::Ping if self.spec.behaviour == Behaviour::Responsive => {
                    out.send(conn, Frame::Pong);
                }
                ref probe
                    if probe.is_orderbook_probe()
                        && self.spec.maker
                        && self.spec.behaviour == Behaviour::Responsive =>
                {
                    out.send(conn, self.offer.clone());
                }
                _ => {}
            },
            Input::Closed { conn, .. } if Some(conn) == self.conn => {
                out.close(conn);
                self.disconnected(now);
            }
            Input::Reset { conn, error, .. } if Some(conn) == self.conn => {
                let reason = error.to_string().into();
                out.record(kind::CONNECTION_LOST, Some(dir), Some(reason), None);
                self.disconnected(now);
            }
            Input::ConnectFailed { conn, error, .. } if Some(conn) == self.conn => {
                let reason = error.to_string().into();
                out.record(kind::CONNECT_FAILED, Some(dir), Some(reason), None);
                self.disconnected(now);
            }
            Input::Timeout => {
                let t = now.mono;
                if self.reconnect_at.is_some_and(|r| r <= t) {
                    out.record(kind::RECONNECT, Some(dir), None, None);
                    self.connect(now, out);
                }
                let Some(conn) = self.conn else { return };
                if let (Some(at), Behaviour::Chatty { every, line }) =
                    (self.next_chat, self.spec.behaviour)
                {
                    if at <= t {
                        let frame = match line {
                            ChatLine::PubMsg => {
                                Frame::PubMsg(format!("{}!PUBLIC!hello", self.spec.nick).into())
                            }
                            ChatLine::Malformed => Frame::Malformed,
                        };
                        out.send(conn, frame);
                        self.next_chat = Some(at + every);
                    }
                }
                if let (Some(at), Some(every)) = (self.next_ping, self.spec.ping_directory_every) {
                    if at <= t {
                        out.send(conn, Frame::Ping);
                        self.next_ping = Some(at + every);
                    }
                }
            }
            // Datagrams, awaited writes (the peer awaits none), frames and
            // endings of a connection it has left behind.
            _ => {}
        }
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        [
            (self.reconnect_at, "reconnect"),
            (self.next_chat, "chat"),
            (self.next_ping, "ping directory"),
        ]
        .into_iter()
        .filter_map(|(at, reason)| at.map(|at| Deadline { at, reason }))
        .min_by_key(|d| d.at)
    }
}

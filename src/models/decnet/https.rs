//! HTTPS the way httpx 0.28.1 / httpcore 1.0.9 do it for DECNET's loops,
//! over the stream medium: one request on a fresh connection (TCP connect,
//! TLS 1.3 handshake, request, response), each step a round trip, with
//! httpx's timeouts as timers and its exceptions kept apart.
//!
//! - Fresh connection per request: `keepalive_expiry` is 5 s
//!   (`httpx/_config.py` l. 178, 247); the pool drops an idle connection
//!   once `now > _expire_at` (`httpcore/_async/http11.py` l. 246-248,
//!   274-276), so DECNET's 30 s loop never reuses one, and each lifecycle
//!   push builds a client of its own (`decnet/agent/heartbeat.py` l. 187).
//! - `connect` bounds the TCP connect and, again, the TLS handshake: each
//!   runs under its own `anyio.fail_after(timeout)`
//!   (`httpcore/_async/connection.py` l. 106-155, `_backends/anyio.py`
//!   l. 67-69, 113-114).
//! - `write` bounds the request's write, `read` the wait for the response
//!   (`_backends/anyio.py` l. 25-50): the read timer starts once the
//!   request is written.
//! - `pool` bounds the wait for a free pooled connection: a loop with one
//!   request at a time never waits, so it has no timer here.
//! - No retry: `retries=0` (`httpx/_transports/default.py` l. 147,
//!   `connection.py` l. 158-160).
//! - Exceptions (`_backends/anyio.py`): connect `OSError -> ConnectError`
//!   (refused), `TimeoutError -> ConnectTimeout` (l. 108-112); TLS
//!   `SSLError`/`EndOfStream`/`BrokenResourceError -> ConnectError` (l.
//!   61-66); read `BrokenResourceError -> ReadError` (reset, TLS alert),
//!   `TimeoutError -> ReadTimeout` (l. 26-31); a FIN before the response is
//!   `RemoteProtocolError` (`http11.py` l. 228-231); write
//!   `TimeoutError -> WriteTimeout`, broken `-> WriteError` (l. 43-47).

use std::collections::BTreeMap;

use heartsim_sim::{ConnError, ConnId, Dest, Duration, Input, NodeId, Outbox, Timestamp};

use super::msg::{Cert, Msg, Request};

/// `httpx.Timeout(connect=.., read=.., write=.., pool=..)` without the pool
/// timer (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
}

/// The agent's `_TIMEOUT = httpx.Timeout(connect=5.0, read=10.0,
/// write=5.0, pool=5.0)` (`decnet/agent/heartbeat.py` l. 35).
pub const AGENT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    read: Duration::from_secs(10),
    write: Duration::from_secs(5),
};

/// The master's `_TIMEOUT_CONTROL = httpx.Timeout(connect=5.0, read=15.0,
/// write=5.0, pool=5.0)` (`decnet/swarm/client.py` l. 58), used by the
/// active probe and `/deploy` and `/mutate` (l. 256, 273).
pub const CONTROL_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    read: Duration::from_secs(15),
    write: Duration::from_secs(5),
};

/// What an httpx request raised: distinct from any HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// `httpx.ConnectError`: refused, or the TLS handshake failed.
    Connect(&'static str),
    /// `httpx.ConnectTimeout`: TCP connect or TLS handshake past `connect`.
    ConnectTimeout,
    /// `httpx.WriteError`.
    Write(&'static str),
    /// `httpx.WriteTimeout`.
    WriteTimeout,
    /// `httpx.ReadError`: a reset, or a TLS alert, while waiting.
    Read(&'static str),
    /// `httpx.ReadTimeout`.
    ReadTimeout,
    /// `httpx.RemoteProtocolError`: "Server disconnected without sending a
    /// response."
    Disconnected,
}

impl HttpError {
    /// The exception as the log would name it (the record's reason).
    pub fn name(self) -> &'static str {
        match self {
            HttpError::Connect(_) => "ConnectError",
            HttpError::ConnectTimeout => "ConnectTimeout",
            HttpError::Write(_) => "WriteError",
            HttpError::WriteTimeout => "WriteTimeout",
            HttpError::Read(_) => "ReadError",
            HttpError::ReadTimeout => "ReadTimeout",
            HttpError::Disconnected => "RemoteProtocolError",
        }
    }
    /// What caused it (the record's message).
    pub fn detail(self) -> &'static str {
        match self {
            HttpError::Connect(d) | HttpError::Write(d) | HttpError::Read(d) => d,
            HttpError::ConnectTimeout | HttpError::WriteTimeout | HttpError::ReadTimeout => {
                "timed out"
            }
            HttpError::Disconnected => "Server disconnected without sending a response.",
        }
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Response {
        status: u16,
        detail: std::sync::Arc<str>,
    },
    Error(HttpError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// `connect_tcp`: waiting for the SYN-ACK.
    Tcp,
    /// `start_tls`: ClientHello sent, waiting for the server's flight.
    Tls,
    /// The request is being written (an awaited write).
    Write,
    /// Waiting for the response.
    Read,
}

/// One request in flight on its own connection.
#[derive(Clone, Debug)]
pub struct Call {
    pub conn: ConnId,
    pub peer: NodeId,
    stage: Stage,
    deadline: Timestamp,
    timeouts: Timeouts,
    request: Request,
    cert: Cert,
    token: u64,
}

impl Call {
    /// Open the connection; `token` names the request's awaited write.
    pub fn start(
        now: Timestamp,
        peer: NodeId,
        request: Request,
        cert: Cert,
        timeouts: Timeouts,
        token: u64,
        out: &mut Outbox<Msg>,
    ) -> Call {
        let conn = out.connect(peer);
        Call {
            conn,
            peer,
            stage: Stage::Tcp,
            deadline: now + timeouts.connect,
            timeouts,
            request,
            cert,
            token,
        }
    }

    /// When its current timer expires.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// Whether `input` is about this call.
    pub fn owns(&self, input: &Input<Msg>) -> bool {
        match input {
            Input::Connected { conn, .. }
            | Input::ConnectFailed { conn, .. }
            | Input::Data { conn, .. }
            | Input::Closed { conn, .. }
            | Input::Reset { conn, .. } => *conn == self.conn,
            Input::SendDone { to, token, .. } => {
                *to == Dest::Conn(self.conn) && *token == self.token
            }
            _ => false,
        }
    }

    /// Feed it an input it [`owns`](Call::owns), or a timeout; `Some` when
    /// the request is over (the connection is then closed).
    pub fn on_input(
        &mut self,
        now: Timestamp,
        input: &Input<Msg>,
        out: &mut Outbox<Msg>,
    ) -> Option<Outcome> {
        let result = match (self.stage, input) {
            (Stage::Tcp, Input::Connected { .. }) => {
                out.send(self.conn, Msg::ClientHello);
                self.stage = Stage::Tls;
                self.deadline = now + self.timeouts.connect;
                None
            }
            (Stage::Tcp, Input::ConnectFailed { error, .. }) => {
                Some(Outcome::Error(HttpError::Connect(match error {
                    ConnError::Refused => "[Errno 111] Connection refused",
                    ConnError::TimedOut => "[Errno 110] Connection timed out",
                    _ => "[Errno 104] Connection reset by peer",
                })))
            }
            (
                Stage::Tls,
                Input::Data {
                    msg: Msg::ServerHello,
                    ..
                },
            ) => {
                // TLS 1.3: the client's handshake is complete once its
                // Finished is written; the request follows in the same flight.
                out.send(self.conn, Msg::ClientFinished(self.cert.clone()));
                out.send_awaited(self.conn, Msg::Request(self.request.clone()), self.token);
                self.stage = Stage::Write;
                self.deadline = now + self.timeouts.write;
                None
            }
            (
                Stage::Tls,
                Input::Data {
                    msg: Msg::Alert(_), ..
                },
            ) => Some(Outcome::Error(HttpError::Connect("SSLError: TLS alert"))),
            (Stage::Tls, Input::Closed { .. }) => Some(Outcome::Error(HttpError::Connect(
                "EndOfStream during handshake",
            ))),
            (Stage::Tls, Input::Reset { .. }) => Some(Outcome::Error(HttpError::Connect(
                "[Errno 104] Connection reset by peer",
            ))),
            (Stage::Write, Input::SendDone { result: Ok(()), .. }) => {
                self.stage = Stage::Read;
                self.deadline = now + self.timeouts.read;
                None
            }
            (Stage::Write, Input::SendDone { result: Err(_), .. })
            | (Stage::Write, Input::Reset { .. }) => {
                Some(Outcome::Error(HttpError::Write("[Errno 32] Broken pipe")))
            }
            (
                Stage::Write | Stage::Read,
                Input::Data {
                    msg: Msg::Alert(alert),
                    ..
                },
            ) => Some(Outcome::Error(HttpError::Read(
                if &**alert == "unknown ca" {
                    "SSLError: tlsv1 alert unknown ca"
                } else {
                    "SSLError: tlsv13 alert certificate required"
                },
            ))),
            (
                Stage::Write | Stage::Read,
                Input::Data {
                    msg: Msg::Response { status, detail },
                    ..
                },
            ) => Some(Outcome::Response {
                status: *status,
                detail: detail.clone(),
            }),
            (Stage::Read, Input::Reset { .. }) => Some(Outcome::Error(HttpError::Read(
                "[Errno 104] Connection reset by peer",
            ))),
            (Stage::Write | Stage::Read, Input::Closed { .. }) => {
                Some(Outcome::Error(HttpError::Disconnected))
            }
            (stage, Input::Timeout) if now >= self.deadline => Some(Outcome::Error(match stage {
                Stage::Tcp | Stage::Tls => HttpError::ConnectTimeout,
                Stage::Write => HttpError::WriteTimeout,
                Stage::Read => HttpError::ReadTimeout,
            })),
            _ => None,
        };
        if result.is_some() {
            // `async with AsyncClient(..)` / the pool closes the socket.
            out.close(self.conn);
        }
        result
    }
}

/// A TLS server's connections (uvicorn with `--ssl-cert-reqs 2`,
/// `decnet/cli/swarmctl.py` l. 122-125; the agent's API likewise,
/// `decnet/agent/app.py` l. 5).
#[derive(Clone, Debug, Default)]
pub struct Server {
    /// Each connection, with the client certificate once verified.
    conns: BTreeMap<ConnId, Option<Cert>>,
}

/// A request that reached the application, with the peer's certificate.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub conn: ConnId,
    pub peer: NodeId,
    pub cert: Cert,
    pub request: Request,
}

impl Server {
    /// Feed it a connection input; a request that passed TLS comes back.
    pub fn on_input(&mut self, input: Input<Msg>, out: &mut Outbox<Msg>) -> Option<Incoming> {
        match input {
            Input::Accepted { conn, .. } => {
                self.conns.insert(conn, None);
            }
            Input::Data { conn, peer, msg } => {
                let slot = self.conns.get_mut(&conn)?;
                match msg {
                    Msg::ClientHello => out.send(conn, Msg::ServerHello),
                    Msg::ClientFinished(cert) => match cert {
                        // `ssl.CERT_REQUIRED`: the handshake fails with an
                        // alert and the server drops the connection.
                        Cert::None => self.refuse(conn, "certificate required", out),
                        Cert::Untrusted(_) => self.refuse(conn, "unknown ca", out),
                        Cert::Signed(_) => *slot = Some(cert),
                    },
                    Msg::Request(request) => {
                        let cert = slot.clone()?;
                        return Some(Incoming {
                            conn,
                            peer,
                            cert,
                            request,
                        });
                    }
                    _ => {}
                }
            }
            Input::Closed { conn, .. } if self.conns.remove(&conn).is_some() => out.close(conn),
            Input::Reset { conn, .. } => {
                self.conns.remove(&conn);
            }
            _ => {}
        }
        None
    }

    fn refuse(&mut self, conn: ConnId, alert: &'static str, out: &mut Outbox<Msg>) {
        out.send(conn, Msg::Alert(alert.into()));
        out.close(conn);
        self.conns.remove(&conn);
    }

    /// Answer a request; the connection stays open for the client to close
    /// (keep-alive).
    pub fn respond(&self, conn: ConnId, status: u16, detail: &str, out: &mut Outbox<Msg>) {
        if self.conns.contains_key(&conn) {
            out.send(
                conn,
                Msg::Response {
                    status,
                    detail: detail.into(),
                },
            );
        }
    }
}

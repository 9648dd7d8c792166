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
//!   61-66); read `BrokenResourceError -> ReadError` (reset),
//!   `TimeoutError -> ReadTimeout` (l. 26-31); a FIN before the response is
//!   `RemoteProtocolError` (`http11.py` l. 228-231); write
//!   `TimeoutError -> WriteTimeout` (l. 43-47).
//! - A TLS alert after the handshake (the server refused the client
//!   certificate; TLS 1.3 shows it on the first read) is a raw
//!   `ssl.SSLError`: anyio converts only `SSLEOFError` /
//!   `UNEXPECTED_EOF_WHILE_READING` and re-raises the rest
//!   (`anyio/streams/tls.py` l. 197-208: `raise`), the read map has no
//!   `ssl.SSLError` (`_backends/anyio.py` l. 25-31), and httpx re-raises
//!   what it cannot map (`httpx/_transports/default.py` l. 114-115:
//!   `if mapped_exc is None: raise`).
//! - The master's calls to an agent (`AgentClient`, `decnet/swarm/client.py`)
//!   first pin the agent's certificate on a connection of their own:
//!   `__aenter__` awaits `_verify_pin()` (l. 209-212), which, for a row
//!   with a fingerprint (every enrolled row), runs `_fetch_peer_fingerprint`
//!   in a thread (l. 195-205): `socket.create_connection((address, port),
//!   timeout=10.0)` (l. 179), a blocking TLS handshake under the same 10 s
//!   socket timeout per read (`ctx.wrap_socket`, l. 182), the server
//!   certificate's digest, then the socket closed (l. 183-188); a digest
//!   other than the row's raises `FingerprintMismatchError` (l. 202-205).
//!   Only then does httpx open its own connection. That is two round trips
//!   (TCP, TLS 1.3's first flight; the client's handshake is complete once
//!   it has sent its Finished) before the call, and the socket's own
//!   exceptions, not httpx's: `ConnectionRefusedError`, `TimeoutError`,
//!   `ConnectionResetError`, `ssl.SSLEOFError`.
//! - A failed request write is never `WriteError`: httpcore swallows it
//!   (`http11.py` l. 82-95, `except WriteError: ... pass`) and reads the
//!   response, which fails on the dead connection: `BrokenResourceError ->
//!   ReadError` (`_backends/anyio.py` l. 26-31).

use std::collections::BTreeMap;
use std::sync::Arc;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// `httpx.ConnectError`: refused, or the TLS handshake failed.
    Connect(&'static str),
    /// `httpx.ConnectTimeout`: TCP connect or TLS handshake past `connect`.
    ConnectTimeout,
    /// `httpx.WriteTimeout`.
    WriteTimeout,
    /// `httpx.ReadError`: a reset while writing or waiting.
    Read(&'static str),
    /// A raw `ssl.SSLError`: a TLS alert after the handshake (module docs).
    Ssl(&'static str),
    /// `httpx.ReadTimeout`.
    ReadTimeout,
    /// `httpx.RemoteProtocolError`: "Server disconnected without sending a
    /// response."
    Disconnected,
    /// The pin connection's (module docs) exception, by its Python name.
    Pin {
        name: &'static str,
        detail: Arc<str>,
    },
}

impl HttpError {
    /// The exception as the log would name it (the record's reason).
    pub fn name(&self) -> &'static str {
        match self {
            HttpError::Pin { name, .. } => name,
            HttpError::Connect(_) => "ConnectError",
            HttpError::ConnectTimeout => "ConnectTimeout",
            HttpError::WriteTimeout => "WriteTimeout",
            HttpError::Read(_) => "ReadError",
            HttpError::Ssl(_) => "SSLError",
            HttpError::ReadTimeout => "ReadTimeout",
            HttpError::Disconnected => "RemoteProtocolError",
        }
    }
    /// What caused it (the record's message).
    pub fn detail(&self) -> &str {
        match self {
            HttpError::Pin { detail, .. } => detail,
            HttpError::Connect(d) | HttpError::Read(d) | HttpError::Ssl(d) => d,
            // `anyio.fail_after` raises a bare `TimeoutError()`, which
            // httpcore maps and httpx re-raises with `str(exc)`: empty
            // (`httpx/_transports/default.py` l. 117-118).
            HttpError::ConnectTimeout | HttpError::WriteTimeout | HttpError::ReadTimeout => "",
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
    /// The pin's `socket.create_connection(.., timeout=10.0)`.
    PinTcp,
    /// The pin's `wrap_socket` handshake: waiting for the server's flight.
    PinTls,
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
    /// The row's fingerprint the agent's certificate must match, until the
    /// pin connection is done.
    pin: Option<Arc<str>>,
}

/// `socket.create_connection(..., timeout=10.0)` (`swarm/client.py` l. 179):
/// the connect, and each blocking read of the handshake.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(10);

fn pin_error(name: &'static str, detail: impl Into<Arc<str>>) -> Outcome {
    Outcome::Error(HttpError::Pin {
        name,
        detail: detail.into(),
    })
}

impl Call {
    /// Open the connection (the pin's first, given `pin`: module docs);
    /// `token` names the request's awaited write.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        now: Timestamp,
        peer: NodeId,
        request: Request,
        cert: Cert,
        timeouts: Timeouts,
        token: u64,
        pin: Option<Arc<str>>,
        out: &mut Outbox<Msg>,
    ) -> Call {
        let conn = out.connect(peer);
        let (stage, deadline) = match pin {
            Some(_) => (Stage::PinTcp, now + PIN_TIMEOUT),
            None => (Stage::Tcp, now + timeouts.connect),
        };
        Call {
            conn,
            peer,
            stage,
            deadline,
            timeouts,
            request,
            cert,
            token,
            pin,
        }
    }

    /// When its current timer expires.
    pub fn deadline(&self) -> Timestamp {
        self.deadline
    }

    /// What its current timer is, for the trace.
    pub fn deadline_reason(&self) -> &'static str {
        match self.stage {
            Stage::PinTcp | Stage::PinTls => "pin socket timeout",
            _ => "httpx timeout",
        }
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
            (Stage::PinTcp, Input::Connected { .. }) => {
                out.send(self.conn, Msg::ClientHello);
                self.stage = Stage::PinTls;
                self.deadline = now + PIN_TIMEOUT;
                None
            }
            // `create_connection` re-raises the connect's `OSError`.
            (Stage::PinTcp, Input::ConnectFailed { error, .. }) => Some(match error {
                ConnError::Refused => {
                    pin_error("ConnectionRefusedError", "[Errno 111] Connection refused")
                }
                ConnError::TimedOut => {
                    pin_error("TimeoutError", "[Errno 110] Connection timed out")
                }
                _ => pin_error(
                    "ConnectionResetError",
                    "[Errno 104] Connection reset by peer",
                ),
            }),
            (
                Stage::PinTls,
                Input::Data {
                    msg: Msg::ServerHello(server),
                    ..
                },
            ) => {
                // The client's handshake ends with its Finished; then
                // `getpeercert`, the socket closed (l. 182-188), and the
                // digest compared (l. 202-205). An empty `der` is a
                // mismatch against "" (l. 189-192).
                out.send(self.conn, Msg::ClientFinished(self.cert.clone()));
                out.close(self.conn);
                let expected = self.pin.take().unwrap_or_default();
                match server {
                    // `fp.lower()` against `hexdigest().lower()`
                    // (`swarm/client.py:130, 193`): both lowercase hex, so
                    // exact, as the heartbeat's check (`db.rs`).
                    Cert::Signed(actual) if *actual == expected => {
                        self.conn = out.connect(self.peer);
                        self.stage = Stage::Tcp;
                        self.deadline = now + self.timeouts.connect;
                        return None;
                    }
                    // `ctx.verify_mode = ssl.CERT_REQUIRED` against the
                    // DECNET CA (l. 176-177).
                    Cert::Untrusted(_) => {
                        return Some(pin_error(
                            "SSLCertVerificationError",
                            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate",
                        ));
                    }
                    Cert::Signed(actual) => return Some(mismatch(self.peer, &expected, actual)),
                    Cert::None => return Some(mismatch(self.peer, &expected, "")),
                }
            }
            (
                Stage::PinTls,
                Input::Data {
                    msg: Msg::Alert(_), ..
                },
            ) => Some(pin_error("SSLError", "TLS alert during the pin handshake")),
            (Stage::PinTls, Input::Closed { .. }) => Some(pin_error(
                "SSLEOFError",
                "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol",
            )),
            (Stage::PinTls, Input::Reset { .. }) => Some(pin_error(
                "ConnectionResetError",
                "[Errno 104] Connection reset by peer",
            )),
            (Stage::Tcp, Input::Connected { .. }) => {
                out.send(self.conn, Msg::ClientHello);
                self.stage = Stage::Tls;
                self.deadline = now + self.timeouts.connect;
                None
            }
            // anyio's `connect_tcp` gathers each address's `OSError` and
            // raises `OSError("All connection attempts failed")`
            // (`anyio/_core/_sockets.py` l. 241-248), whatever the cause.
            (Stage::Tcp, Input::ConnectFailed { .. }) => Some(Outcome::Error(HttpError::Connect(
                "All connection attempts failed",
            ))),
            (
                Stage::Tls,
                Input::Data {
                    msg: Msg::ServerHello(_),
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
            // `EndOfStream` during `start_tls`: `ConnectError('')`.
            (Stage::Tls, Input::Closed { .. }) => Some(Outcome::Error(HttpError::Connect(""))),
            // anyio raises a bare `BrokenResourceError`: httpx's text is
            // empty, during TLS (`ConnectError`) and after (`ReadError`).
            (Stage::Tls, Input::Reset { .. }) => Some(Outcome::Error(HttpError::Connect(""))),
            (Stage::Write, Input::SendDone { result: Ok(()), .. }) => {
                self.stage = Stage::Read;
                self.deadline = now + self.timeouts.read;
                None
            }
            // httpcore swallows the `WriteError` and reads: the read fails
            // on the dead connection (module docs, `http11.py` l. 82-95).
            (Stage::Write, Input::SendDone { result: Err(_), .. })
            | (Stage::Write | Stage::Read, Input::Reset { .. }) => {
                Some(Outcome::Error(HttpError::Read("")))
            }
            (
                Stage::Write | Stage::Read,
                Input::Data {
                    msg: Msg::Alert(alert),
                    ..
                },
            ) => Some(Outcome::Error(HttpError::Ssl(
                if &**alert == "unknown ca" {
                    "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"
                } else {
                    "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required"
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
            (Stage::Write | Stage::Read, Input::Closed { .. }) => {
                Some(Outcome::Error(HttpError::Disconnected))
            }
            // `socket.timeout` is `TimeoutError`: "timed out" from the
            // connect, CPython's `_ssl.c` "The handshake operation timed
            // out" (prefixed there by `_ssl.c:<line>: `) from the handshake.
            (Stage::PinTcp, Input::Timeout) if now >= self.deadline => {
                Some(pin_error("TimeoutError", "timed out"))
            }
            (Stage::PinTls, Input::Timeout) if now >= self.deadline => Some(pin_error(
                "TimeoutError",
                "The handshake operation timed out",
            )),
            (stage, Input::Timeout) if now >= self.deadline => Some(Outcome::Error(match stage {
                Stage::PinTcp | Stage::PinTls => unreachable!("handled above"),
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

/// `FingerprintMismatchError(f"{address}:{port}", expected, actual)`
/// (`swarm/client.py` l. 37-49; the agent's port 8765); the model's
/// address is the node.
fn mismatch(peer: NodeId, expected: &str, actual: &str) -> Outcome {
    let cut = |f: &str| f.chars().take(16).collect::<String>();
    pin_error(
        "FingerprintMismatchError",
        format!(
            "agent node{}:8765: cert fingerprint mismatch (expected={}…, got={}…)",
            peer.0,
            cut(expected),
            cut(actual)
        ),
    )
}

/// A TLS server's connections (uvicorn with `--ssl-cert-reqs 2`,
/// `decnet/cli/swarmctl.py` l. 122-125; the agent's API likewise,
/// `decnet/agent/app.py` l. 5).
#[derive(Clone, Debug)]
pub struct Server {
    /// Its own certificate, sent in the handshake.
    cert: Cert,
    /// Each connection: the client certificate once the handshake is
    /// done, else when it is aborted.
    conns: BTreeMap<ConnId, ServerConn>,
}

/// asyncio's server-side handshake bound: uvicorn passes no
/// `ssl_handshake_timeout` to `loop.create_server` (uvicorn 0.44.0
/// `server.py` l. 170-177), so `SSL_HANDSHAKE_TIMEOUT = 60.0`
/// (`asyncio/constants.py`) applies from `connection_made`
/// (`asyncio/sslproto.py`, `_start_handshake` arms it and
/// `_check_handshake_timeout` aborts the transport).
pub const SSL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
enum ServerConn {
    Handshake { abort_at: Timestamp },
    Verified(Cert),
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
    pub fn new(cert: Cert) -> Server {
        Server {
            cert,
            conns: BTreeMap::new(),
        }
    }

    /// Feed it a connection input (at monotonic `now`); a request that
    /// passed TLS comes back.
    pub fn on_input(
        &mut self,
        now: Timestamp,
        input: Input<Msg>,
        out: &mut Outbox<Msg>,
    ) -> Option<Incoming> {
        match input {
            Input::Accepted { conn, .. } => {
                let abort_at = now + SSL_HANDSHAKE_TIMEOUT;
                self.conns.insert(conn, ServerConn::Handshake { abort_at });
            }
            Input::Data { conn, peer, msg } => {
                let slot = self.conns.get_mut(&conn)?;
                match msg {
                    Msg::ClientHello => out.send(conn, Msg::ServerHello(self.cert.clone())),
                    Msg::ClientFinished(cert) => match cert {
                        // `ssl.CERT_REQUIRED`: the handshake fails with an
                        // alert and the server drops the connection.
                        Cert::None => self.refuse(conn, "certificate required", out),
                        Cert::Untrusted(_) => self.refuse(conn, "unknown ca", out),
                        Cert::Signed(_) => *slot = ServerConn::Verified(cert),
                    },
                    Msg::Request(request) => {
                        let ServerConn::Verified(cert) = slot else {
                            return None;
                        };
                        let cert = cert.clone();
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

    /// The earliest handshake abort due.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.conns
            .values()
            .filter_map(|c| match c {
                ServerConn::Handshake { abort_at } => Some(*abort_at),
                ServerConn::Verified(_) => None,
            })
            .min()
    }

    /// Abort each connection whose handshake has not finished within
    /// [`SSL_HANDSHAKE_TIMEOUT`]: `transport._force_close`, a plain close
    /// (upstream logs it at debug level only). A client that gave up on
    /// the request long ago cannot have it applied after a long partition.
    pub fn on_timeout(&mut self, now: Timestamp, out: &mut Outbox<Msg>) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c, ServerConn::Handshake { abort_at } if *abort_at <= now))
            .map(|(conn, _)| *conn)
            .collect();
        for conn in due {
            self.conns.remove(&conn);
            out.close(conn);
        }
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

//! What DECNET's processes say to each other: TLS handshake flights and
//! HTTP/1.1 requests and responses over one connection (the stream medium),
//! bus publishes as datagrams, and the database file's answers.

use std::sync::Arc;

use heartsim_sim::FileDone;
use serde::{Deserialize, Serialize};

/// The client certificate an agent presents in its TLS handshake.
///
/// Its fingerprint stands for the lowercase hex SHA-256 of the DER
/// certificate that `decnet/web/_mtls.py` `extract_peer_fingerprint`
/// (l. 115-120) computes: two certificates are the same iff their names are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cert {
    /// No certificate.
    None,
    /// Signed by the DECNET CA (a worker's bundle, enrolled or not).
    Signed(Arc<str>),
    /// Signed by another CA: the server's `CERT_REQUIRED` check refuses it.
    Untrusted(Arc<str>),
}

impl Cert {
    pub fn describe(&self) -> String {
        match self {
            Cert::None => "no certificate".into(),
            Cert::Signed(f) => format!("cert {f}"),
            Cert::Untrusted(f) => format!("untrusted cert {f}"),
        }
    }
}

/// One lifecycle delta: `{decky_name, operation, status, error?,
/// completed_at?}` (`decnet/agent/executor.py` l. 105-121, 138-143).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub decky: Arc<str>,
    pub operation: Arc<str>,
    pub status: Arc<str>,
    pub error: Option<Arc<str>>,
    /// The agent's wall clock (`datetime.now(timezone.utc).isoformat()`).
    pub completed_at_us: Option<u64>,
}

/// `status` as `executor.status()` reports it: `deployed`, and each
/// decky's `runtime[name].running`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub deployed: bool,
    pub deckies: Vec<(Arc<str>, bool)>,
}

/// The applied topology the agent reports: `{topology_id,
/// applied_version_hash}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub id: Arc<str>,
    pub hash: Arc<str>,
}

/// A `POST /swarm/heartbeat` body as sent: any JSON shape, so that the
/// master's validation (`HeartbeatRequest`, `api_heartbeat.py` l. 37-46) is
/// what decides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Not JSON at all.
    NotJson,
    /// A JSON object; `None` is a missing key.
    Object {
        host_uuid: Option<Json>,
        agent_version: Option<Arc<str>>,
        status: Option<Json>,
        topology: Option<Topology>,
        lifecycle: Option<Vec<Delta>>,
    },
}

/// A JSON value where the model needs its type: a string, a status object,
/// or something else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Json {
    Str(Arc<str>),
    Status(Status),
    /// A number, a list, `null`: not what `HeartbeatRequest` expects for
    /// either key.
    Other,
}

/// An HTTP request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `POST /swarm/heartbeat`.
    Heartbeat(Body),
    /// `GET /health` (the master's probe of an agent).
    Health,
    /// `POST /deploy` or `/mutate` to an agent: 202, then the work.
    Operation {
        decky: Arc<str>,
        operation: Arc<str>,
    },
    /// `POST /self-destruct` to an agent (decommission).
    SelfDestruct,
}

impl Request {
    pub fn path(&self) -> &'static str {
        match self {
            Request::Heartbeat(_) => "POST /swarm/heartbeat",
            Request::Health => "GET /health",
            Request::Operation { .. } => "POST /deploy",
            Request::SelfDestruct => "POST /self-destruct",
        }
    }
}

/// Everything on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// TLS 1.3, client: ClientHello.
    ClientHello,
    /// TLS 1.3, server: ServerHello .. Certificate (the server's own) ..
    /// CertificateRequest .. Finished.
    ServerHello(Cert),
    /// TLS 1.3, client: Certificate, CertificateVerify, Finished.
    ClientFinished(Cert),
    /// TLS alert (the server refused the client's certificate).
    Alert(Arc<str>),
    Request(Request),
    Response {
        status: u16,
        detail: Arc<str>,
    },
    /// A bus publish (`system.<worker>.health`, payload `ts`: the
    /// publisher's `time.time()`), and the bus's delivery to a subscriber.
    Publish {
        worker: Arc<str>,
        ts_us: u64,
    },
    /// `SUB system.*.health` (the main API's worker registry).
    Subscribe,
    /// The answer to a database file operation.
    File(FileDone),
}

impl Msg {
    pub fn describe(&self) -> String {
        match self {
            Msg::ClientHello => "TLS ClientHello".into(),
            Msg::ServerHello(c) => {
                format!("TLS ServerHello..Certificate({})..Finished", c.describe())
            }
            Msg::ClientFinished(c) => format!("TLS Certificate({})..Finished", c.describe()),
            Msg::Alert(a) => format!("TLS alert {a}"),
            Msg::Request(r) => r.path().into(),
            Msg::Response { status, detail } if detail.is_empty() => format!("HTTP {status}"),
            Msg::Response { status, detail } => format!("HTTP {status} {detail}"),
            Msg::Publish { worker, ts_us } => {
                format!(
                    "system.{worker}.health ts={}",
                    heartsim_sim::Timestamp::from_us(*ts_us)
                )
            }
            Msg::Subscribe => "SUB system.*.health".into(),
            Msg::File(d) => format!("file #{}", d.token),
        }
    }
}

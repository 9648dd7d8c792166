//! swarmctl: the master's swarm controller (`decnet/web/swarm_api.py`,
//! uvicorn on port 8770 with `--ssl-cert-reqs 2`, `decnet/cli/swarmctl.py`
//! l. 107-125), serving `POST /swarm/heartbeat`
//! (`decnet/web/router/swarm/api_heartbeat.py`). TLS refuses a missing or
//! non-CA certificate ([`super::https::Server`]); the handler reads and
//! writes the database ([`super::db`]).

use std::borrow::Cow;
use std::sync::Arc;

use heartsim_sim::{ConnId, Deadline, Input, NodeId, Now, Outbox};

use super::db::{Access, Db};
use super::https::Server;
use super::kind;
use super::msg::{Body, Cert, Json, Msg, Request};

#[derive(Clone, Debug)]
struct Pending {
    conn: ConnId,
    peer: NodeId,
    cert: Cert,
    body: Body,
}

#[derive(Clone, Debug)]
pub struct Swarmctl {
    initial: Arc<Db>,
    server: Server,
    db: Access<Pending>,
}

impl Swarmctl {
    pub fn new(initial: Arc<Db>) -> Self {
        Swarmctl {
            initial,
            server: Server::new(Cert::Signed("decnet-swarmctl".into())),
            db: Access::default(),
        }
    }

    pub fn handle(&mut self, now: Now, input: Input<Msg>, out: &mut Outbox<Msg>) {
        match input {
            Input::Start => {
                Access::<Pending>::mkdir(out);
                out.listen();
            }
            Input::Recv {
                msg: Msg::File(done),
                ..
            } => {
                let Some((p, old)) = self.db.on_file(&done, &self.initial) else {
                    return;
                };
                let mut db = old.clone();
                let (status, detail) = db.heartbeat(now.wall.as_us(), &p.cert, &p.body);
                let claimed = match &p.body {
                    Body::Object {
                        host_uuid: Some(Json::Str(u)),
                        ..
                    } => format!("host_uuid={u} "),
                    _ => String::new(),
                };
                let lifecycle = matches!(
                    &p.body,
                    Body::Object {
                        lifecycle: Some(_),
                        ..
                    }
                );
                let reason = if detail.is_empty() {
                    status.to_string()
                } else {
                    format!("{status} {detail}")
                };
                let msg = format!(
                    "{claimed}{}{}",
                    p.cert.describe(),
                    if lifecycle { " with lifecycle" } else { "" }
                );
                out.record(
                    kind::HEARTBEAT,
                    Some(p.peer),
                    Some(Cow::Owned(reason)),
                    Some(msg.into()),
                );
                self.db.commit(&old, &db, out);
                self.server.respond(p.conn, status, detail, out);
            }
            Input::Timeout => self.server.on_timeout(now.mono, out),
            Input::Stop | Input::Recv { .. } => {}
            input => {
                let Some(incoming) = self.server.on_input(now.mono, input, out) else {
                    return;
                };
                match incoming.request {
                    Request::Heartbeat(body) => self.db.begin(
                        Pending {
                            conn: incoming.conn,
                            peer: incoming.peer,
                            cert: incoming.cert,
                            body,
                        },
                        out,
                    ),
                    _ => self.server.respond(incoming.conn, 404, "Not Found", out),
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Deadline> {
        self.server.deadline().map(|at| Deadline {
            at,
            reason: "ssl handshake timeout",
        })
    }
}

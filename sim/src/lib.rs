//! heartsim-sim: a deterministic discrete-event engine for sans-IO machines.
//!
//! The engine knows nothing about heartbeats. It hosts one [`Machine`] per
//! node, a simulated [`net::Network`] between them, per-node [`clock`]s,
//! scheduled [`Fault`]s and a [`trace::Trace`].
//!
//! # Drive loop
//!
//! ```text
//! loop {
//!     pop the earliest event by (time, seq)      // seq breaks ties: one order
//!     stop if its time is past Limits::end; fail if an event/queue limit is hit
//!     Deliver  -> parked if its link is held or its node paused, else
//!                 machine.handle(clock.now(t), Input::Recv { .. })
//!     Timer    -> machine.handle(clock.now(t), Input::Timeout)   (if not stale
//!                 and the node is not paused)
//!     Fault    -> change the network, a link's state, a clock, or a node's
//!                 lifecycle; release and resume hand parked events over at once
//!     after every handle: carry out the outbox in order
//!         send          -> network decides: lost, partitioned or delivered later
//!         send_awaited  -> as send, then Input::SendDone at once (on a stalled
//!                          link: when the link is released)
//!         try_send      -> as send, then Input::SendDone at once
//!         record        -> appended to the trace with the current time
//!     then poll_timeout() and re-arm the node's one timer
//! }
//! ```
//!
//! A new medium is added the way the network was: an output kind in the
//! [`Outbox`], an event kind in the queue, and faults that change their
//! state. The filesystem ([`fs`]) is one: `Outbox::file`, the `FileDone`
//! event, answers through [`Machine::file_done`], and the disk faults.
//!
//! Everything random is drawn from ChaCha8 streams derived from one seed
//! ([`rng::stream`]), one stream per link, so the same scenario and seed give
//! byte-identical traces on every run and machine.

pub mod clock;
pub mod driver;
pub mod engine;
pub mod fs;
#[cfg(madsim)]
pub mod madsim_engine;
pub mod net;
pub mod rng;
pub mod script;
pub mod stream;
pub mod time;
pub mod trace;

pub use clock::{Clock, Now};
pub use engine::{
    current_time, Deadline, Engine, Fault, Host, Input, LimitError, Limits, Machine, NodeSpec,
    Outbox, SendError, Stats,
};
pub use fs::{Disks, Durability, Errno, FileDone, FileOp};
pub use stream::{ConnError, ConnId, Dest, TcpConfig};
pub use time::{Duration, Timestamp};

/// A node's index in the scenario, in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

//! heartsim: deterministic simulation of heartbeat and liveness protocols.
//!
//! Each upstream heartbeat implementation is a pure, sans-IO state machine
//! under [`models`]: it is handed the time and one input, and answers with
//! actions. It never reads a clock, sleeps, does I/O or draws randomness.
//! The engine in `heartsim-sim` runs these machines inside a simulated
//! network, from one seed.
//!
//! # Drive loop of a machine
//!
//! Any driver (the simulation engine, a test, or a real async loop) runs a
//! machine the same way ([`heartsim_sim::Machine`]):
//!
//! ```text
//! machine.handle(now, Input::Start, &mut out)
//! loop {
//!     perform out: sends (answer send_awaited ones with Input::SendDone
//!                  before anything else), and trace records
//!     wait for the first of: machine.poll_timeout()  -> Input::Timeout
//!                            a received frame        -> Input::Recv
//!     machine.handle(now, input, &mut out)     // now = { mono, wall } of this node
//! }
//! ```
//!
//! A scenario file ([`scenario`]) says which model's machines run, under
//! which faults, and what must happen when; [`run`] runs it and checks it.
//! Models are listed in [`models::ALL`] and reached only through
//! [`scenario::Model`] (the seam); [`cli`] is the command line.

pub mod cli;
pub mod fuzz;
pub mod jobs;
pub mod models;
pub mod qos;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sweep;

pub use heartsim_sim as sim;

//! The pure heartbeat machines, one module per upstream system.

pub mod joinmarket;

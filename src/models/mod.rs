//! The models, one folder each, and the registry that lists them. Adding a
//! model is its folder, its `mod` line here and its element of [`ALL`]
//! (docs/adding-a-model.md).

use crate::scenario::Model;

pub mod decnet;
pub mod joinmarket;
pub mod kstlib;
pub mod lilbee;
pub mod nfd_s;

/// Every model this build has, in the order `heartsim models` lists them
/// (the first is `heartsim fuzz`'s default).
pub static ALL: &[&dyn Model] = &[
    joinmarket::MODEL,
    kstlib::MODEL,
    nfd_s::MODEL,
    lilbee::MODEL,
    decnet::MODEL,
];

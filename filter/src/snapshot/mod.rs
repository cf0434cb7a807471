//! The namespace map the filter rewrites with, from the wire to a request:
//!
//! * `format`: the snapshot document the control plane serves (re-exported here:
//!   [`Snapshot`], [`NamespaceLabels`]);
//! * [`catalog`]: the snapshot compiled with the configuration, once per version;
//! * [`fetch`]: the long poll, its back-off and staleness bound;
//! * [`lease`]: which of an Envoy's VMs polls.
//!
//! It owns no body rewriting and no host calls: the glue performs what these
//! modules decide.

pub mod catalog;
pub mod fetch;
mod format;
pub mod lease;

pub use format::*;

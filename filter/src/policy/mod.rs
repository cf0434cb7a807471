//! Request policy, decided before any body is read:
//!
//! * [`endpoint`]: which kubelet endpoint a path names, as kubelets 1.20–1.35
//!   route it;
//! * [`decide`]: what a request may do with it (rewrite, pass, deny), per mode;
//! * [`answer`]: the filter's own answers, shaped like a kubelet's;
//! * [`http`]: header rules: what the kubelet is asked for, which of its answers
//!   are rewritable, how the tenant header is read.
//!
//! Pure decisions over paths and header values; no body is read here and no host
//! call is made.

pub mod answer;
pub mod decide;
pub mod endpoint;
pub mod http;

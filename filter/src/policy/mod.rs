//! Request policy: which kubelet endpoint a path names and what the filter does
//! with it ([`endpoint`]), and the header rules around it ([`http`]): what the
//! kubelet is asked for, which responses are rewritable, how the tenant is read.
//!
//! Pure decisions over paths and header values; no body is read here and no host
//! call is made.

pub mod endpoint;
pub mod http;

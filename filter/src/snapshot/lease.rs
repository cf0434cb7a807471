//! The snapshot poller's lease: which of the VMs of one Envoy (one per worker
//! thread, all sharing proxy-wasm shared data) fetches the snapshot.
//!
//! The lease is one shared-data value, `<holder> <expires_at_ms>`, changed only with
//! compare-and-swap: a VM renews its own lease on every tick, takes over a lease that
//! has expired (its holder stopped renewing: the worker is wedged or gone), and
//! otherwise follows. This module is the pure decision; the glue does the
//! `get_shared_data`/`set_shared_data` calls.
//!
//! Shared data has one weak spot: a *missing* key is created whatever CAS value is
//! given. Two VMs starting at the same instant may therefore both create the lease;
//! the loser finds out at its next renewal (its CAS no longer matches) and stops, so
//! at worst two fetches overlap once at start-up. Fetching is idempotent, so that is
//! harmless.

/// Shared-data key of the lease.
pub const LEASE_KEY: &str = "kubelet-scope/lease";

/// A lease not renewed for this long is taken over by another VM.
pub const LEASE_TTL_MS: u64 = 10_000;

/// The decoded lease value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Random identity of the holding VM.
    pub holder: u64,
    /// Wall-clock time (ms since the epoch) after which the lease is free.
    pub expires_at_ms: u64,
}

impl Lease {
    pub fn encode(&self) -> Vec<u8> {
        format!("{:016x} {}", self.holder, self.expires_at_ms).into_bytes()
    }

    /// `None` for anything that is not a lease this module wrote.
    pub fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (holder, expires) = text.split_once(' ')?;
        Some(Lease {
            holder: u64::from_str_radix(holder, 16).ok()?,
            expires_at_ms: expires.parse().ok()?,
        })
    }
}

/// What a VM should do with the lease on this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// Write `value` with this CAS (`None`: the key does not exist yet). Success
    /// means this VM holds the lease until `value`'s expiry; a CAS mismatch means
    /// another VM got there first.
    Write { value: Vec<u8>, cas: Option<u32> },
    /// Another VM holds a valid lease.
    Follow { holder: u64, expires_at_ms: u64 },
}

/// Decides the step for VM `me` at `now_ms`, given the current shared value and its
/// CAS (`None` when the key is missing).
pub fn next_step(me: u64, now_ms: u64, ttl_ms: u64, current: Option<(&[u8], u32)>) -> LeaseStep {
    let mine = Lease {
        holder: me,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    }
    .encode();
    let Some((bytes, cas)) = current else {
        return LeaseStep::Write {
            value: mine,
            cas: None,
        };
    };
    match Lease::decode(bytes) {
        // Our own lease (renew), an expired one (take over) or garbage (repair).
        Some(lease) if lease.holder != me && now_ms < lease.expires_at_ms => LeaseStep::Follow {
            holder: lease.holder,
            expires_at_ms: lease.expires_at_ms,
        },
        _ => LeaseStep::Write {
            value: mine,
            cas: Some(cas),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let l = Lease {
            holder: 0xdead_beef,
            expires_at_ms: 1_700_000_000_123,
        };
        assert_eq!(Lease::decode(&l.encode()), Some(l));
        for bad in [&b""[..], b"x", b"12", b"zz 1", b"12 -1", b"\xff 1"] {
            assert_eq!(Lease::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn creates_renews_follows_and_takes_over() {
        // Missing key: create it.
        assert_eq!(
            next_step(1, 100, 10, None),
            LeaseStep::Write {
                value: Lease {
                    holder: 1,
                    expires_at_ms: 110
                }
                .encode(),
                cas: None
            }
        );
        let held_by_2 = Lease {
            holder: 2,
            expires_at_ms: 200,
        }
        .encode();
        // Someone else's valid lease: follow.
        assert_eq!(
            next_step(1, 150, 10, Some((&held_by_2, 7))),
            LeaseStep::Follow {
                holder: 2,
                expires_at_ms: 200
            }
        );
        // Expired: take over with the CAS seen.
        assert_eq!(
            next_step(1, 200, 10, Some((&held_by_2, 7))),
            LeaseStep::Write {
                value: Lease {
                    holder: 1,
                    expires_at_ms: 210
                }
                .encode(),
                cas: Some(7)
            }
        );
        // Our own: renew, even before expiry.
        assert_eq!(
            next_step(2, 150, 10, Some((&held_by_2, 7))),
            LeaseStep::Write {
                value: Lease {
                    holder: 2,
                    expires_at_ms: 160
                }
                .encode(),
                cas: Some(7)
            }
        );
        // Garbage is repaired.
        assert!(matches!(
            next_step(1, 0, 10, Some((b"garbage", 3))),
            LeaseStep::Write { cas: Some(3), .. }
        ));
    }
}

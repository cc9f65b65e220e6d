//! How much one client, and all clients together, may ask of the server: a request rate per
//! client ([`RateLimits`], GCRA from the `governor` crate) and a cap on uploads being read and
//! checked at once ([`Gate`], each holds up to three copies of a 16 MiB body).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::KeyId;
use crate::error::ApiError;

/// Who a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// An API key (authentication on).
    Key(KeyId),
    /// A peer address (authentication off); IPv6 clients by their /64, which one host
    /// usually has whole.
    Ip(IpAddr),
    /// No peer address (not over TCP).
    Unknown,
}

impl Client {
    /// The client a peer address is, when keys are off.
    pub fn from_ip(ip: Option<IpAddr>) -> Self {
        match ip {
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::Ip(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Client::Ip(IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0]))
                }
            },
            Some(v4) => Client::Ip(v4),
            None => Client::Unknown,
        }
    }
}

/// Requests per client: a sustained rate with a burst allowance.
pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<Client>,
    clock: DefaultClock,
}

impl RateLimits {
    /// `per_minute` requests a minute sustained, up to `burst` at once; `None` when `per_minute`
    /// is 0 (no limit).
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs(60) / per_minute.get())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Some(RateLimits {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        })
    }

    /// Counts one request of `client`; a 429 saying when to come back if it is over its rate.
    pub fn check(&self, client: &Client) -> Result<(), ApiError> {
        self.limiter.check_key(client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::RateLimited {
                retry_after: wait.as_secs() + 1,
            }
        })
    }

    /// Forgets clients whose allowance is full again, so idle ones take no memory.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// Heavy requests (uploads, files made on demand) running at once, server-wide; a request waits
/// its turn up to a limit.
#[derive(Clone)]
pub struct Gate {
    slots: Arc<Semaphore>,
    size: usize,
    wait: Duration,
    busy: &'static str,
}

/// Seconds a client refused by a [`Gate`] is told to wait.
const GATE_RETRY_AFTER: u64 = 5;

impl Gate {
    /// At most `slots` at once; others wait up to `wait` for a slot, then get 503 saying
    /// `busy`.
    pub fn new(slots: usize, wait: Duration, busy: &'static str) -> Self {
        Gate {
            slots: Arc::new(Semaphore::new(slots)),
            size: slots,
            wait,
            busy,
        }
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    /// A slot, held until dropped; 503 if none frees up in time.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let slots = self.slots.clone();
        match tokio::time::timeout(self.wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Busy {
                what: self.busy.into(),
                retry_after: GATE_RETRY_AFTER,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_a_wait() {
        let limits = RateLimits::new(60, 3).unwrap();
        let a = Client::Ip("192.0.2.1".parse().unwrap());
        let b = Client::Ip("192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            limits.check(&a).unwrap();
        }
        match limits.check(&a) {
            Err(ApiError::RateLimited { retry_after }) => assert!((1..=2).contains(&retry_after)),
            other => panic!("{other:?}"),
        }
        limits.check(&b).unwrap();
        assert!(RateLimits::new(0, 3).is_none());
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let one = Client::from_ip(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let two = Client::from_ip(Some("2001:db8:1:2:bbbb::2".parse().unwrap()));
        let other = Client::from_ip(Some("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(one, two);
        assert_ne!(one, other);
        assert_eq!(
            Client::from_ip(Some("::ffff:192.0.2.1".parse().unwrap())),
            Client::Ip("192.0.2.1".parse().unwrap())
        );
    }
}

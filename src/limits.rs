//! Abuse limits: how fast one connection may send frames, publish and
//! join, and how fast one API key may call the API. Rates are governor's
//! GCRA limiters (a rate and a burst; one atomic word of state each), so a
//! client that stays under the rate never notices them and one that floods
//! is refused at once, with the time after which it would be admitted.
//!
//! A connection's limiters are made on first use: most connections never
//! publish or join, and an idle connection carries three empty pointers.
//! The per-user connection cap is a count, kept by the hub (see
//! [`crate::node::Node::connect`]); the per-node cap is `--max-connections`
//! (see [`crate::server`]). docs/operations.md lists every limit.

use std::{num::NonZeroU32, time::Duration};

use governor::{Quota, RateLimiter, clock::Clock};

pub use crate::http_error::{ceil_ms, ceil_secs};
use crate::{config::Config, metrics::Limit};

/// One rate limiter: governor's direct limiter on the monotonic clock.
pub type Limiter = governor::DefaultDirectRateLimiter;

/// A rate with its burst, or none when the rate is 0.
fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// The configured limits, shared by every connection of the node.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    frames: Option<Quota>,
    publish: Option<Quota>,
    join: Option<Quota>,
    api: Option<Quota>,
    /// Most connections of one uid on this node (0: no cap).
    pub max_user_connections: usize,
}

impl Limits {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            frames: quota(cfg.client_frame_rate, cfg.client_frame_burst),
            publish: quota(cfg.client_publish_rate, cfg.client_publish_burst),
            join: quota(cfg.client_join_rate, cfg.client_join_burst),
            api: quota(cfg.api_rate, cfg.api_burst),
            max_user_connections: cfg.max_user_connections,
        }
    }

    fn quota(&self, kind: Limit) -> Option<Quota> {
        match kind {
            Limit::Frames => self.frames,
            Limit::Publish => self.publish,
            Limit::Join => self.join,
            Limit::Api => self.api,
        }
    }

    /// One limiter per API key (`None` when API requests are not limited).
    pub fn api_limiters(&self, keys: usize) -> Option<Box<[Limiter]>> {
        let quota = self.api?;
        Some((0..keys).map(|_| RateLimiter::direct(quota)).collect())
    }
}

/// Checks one cell against `limiter`: `Err` carries how long until it
/// would have been admitted.
pub fn check(limiter: &Limiter) -> Result<(), Duration> {
    limiter.check().map_err(|not_until| {
        not_until.wait_time_from(governor::clock::DefaultClock::default().now())
    })
}

/// A connection's own limiters, each made the first time it is needed.
#[derive(Debug, Default)]
pub struct ConnLimits {
    frames: Option<Box<Limiter>>,
    publish: Option<Box<Limiter>>,
    join: Option<Box<Limiter>>,
}

impl ConnLimits {
    /// Counts one `kind` cell: `Err` is how long until the connection
    /// would have been allowed it (counted in the metrics).
    pub fn check(&mut self, kind: Limit, limits: &Limits) -> Result<(), Duration> {
        let slot = match kind {
            Limit::Frames => &mut self.frames,
            Limit::Publish => &mut self.publish,
            Limit::Join => &mut self.join,
            Limit::Api => return Ok(()),
        };
        let Some(quota) = limits.quota(kind) else {
            return Ok(());
        };
        let limiter = slot.get_or_insert_with(|| Box::new(RateLimiter::direct(quota)));
        check(limiter).inspect_err(|_| crate::metrics::rate_limited(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32) -> Limits {
        Limits {
            frames: quota(rate, burst),
            publish: quota(rate, burst),
            join: None,
            api: quota(rate, burst),
            max_user_connections: 0,
        }
    }

    #[test]
    fn a_burst_passes_and_the_next_cell_waits_about_one_period() {
        let limits = limits(10, 5);
        let mut conn = ConnLimits::default();
        for _ in 0..5 {
            assert_eq!(conn.check(Limit::Publish, &limits), Ok(()));
        }
        let wait = conn.check(Limit::Publish, &limits).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Kinds are counted apart.
        assert_eq!(conn.check(Limit::Frames, &limits), Ok(()));
    }

    #[test]
    fn a_rate_of_zero_is_no_limit_and_makes_no_limiter() {
        let limits = limits(10, 5);
        let mut conn = ConnLimits::default();
        for _ in 0..10_000 {
            assert_eq!(conn.check(Limit::Join, &limits), Ok(()));
        }
        assert!(conn.join.is_none());
        assert!(Limits::default().api_limiters(3).is_none());
        assert_eq!(limits.api_limiters(3).map(|l| l.len()), Some(3));
    }
}

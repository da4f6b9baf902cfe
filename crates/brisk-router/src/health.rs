//! A circuit breaker per replica: a replica that keeps failing stops getting requests for a
//! while, then gets one trial request.
//!
//! `threshold` consecutive failures (connection refused, 5xx, a broken stream, garbage)
//! open the circuit for `base_backoff`, doubling with each trip up to `max_backoff`. When the
//! backoff ends the circuit is half-open: the replica is eligible again, one success closes
//! it, one failure opens it again for twice as long.

/// Settings of the breaker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub threshold: u32,
    /// First open period, seconds.
    pub base_backoff: f64,
    /// Longest open period, seconds.
    pub max_backoff: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 3,
            base_backoff: 1.0,
            max_backoff: 30.0,
        }
    }
}

/// One replica's breaker.
#[derive(Clone, Debug, Default)]
pub struct Breaker {
    failures: u32,
    trips: u32,
    open_until: f64,
}

impl Breaker {
    /// Whether the replica may take a request at `now`.
    pub fn is_closed(&self, now: f64) -> bool {
        self.open_until <= now
    }

    /// Whether the breaker has tripped and not yet seen a success since.
    pub fn is_tripped(&self) -> bool {
        self.trips > 0
    }

    /// A request succeeded.
    pub fn success(&mut self) {
        self.failures = 0;
        self.trips = 0;
        self.open_until = 0.0;
    }

    /// A request failed at `now`; returns whether this opened the circuit.
    pub fn failure(&mut self, now: f64, cfg: &BreakerConfig) -> bool {
        self.failures += 1;
        let half_open = self.trips > 0;
        if !half_open && self.failures < cfg.threshold {
            return false;
        }
        let exponent = i32::try_from(self.trips.min(16)).unwrap_or(16);
        let backoff = (cfg.base_backoff * 2f64.powi(exponent)).min(cfg.max_backoff);
        self.trips += 1;
        self.failures = 0;
        self.open_until = now + backoff;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_open_the_circuit_and_a_trial_success_closes_it() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::default();
        assert!(!b.failure(0.0, &cfg));
        assert!(!b.failure(0.0, &cfg));
        assert!(b.failure(0.0, &cfg));
        assert!(!b.is_closed(0.5));
        assert!(b.is_closed(1.0));
        // Half-open: one failure reopens it for twice as long.
        assert!(b.failure(1.0, &cfg));
        assert!(!b.is_closed(2.9));
        assert!(b.is_closed(3.0));
        b.success();
        assert!(!b.is_tripped());
        assert!(!b.failure(3.0, &cfg));
        assert!(b.is_closed(3.0));
    }

    #[test]
    fn backoff_stops_growing_at_the_maximum() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::default();
        let mut now = 0.0;
        for _ in 0..3 {
            b.failure(now, &cfg);
        }
        for _ in 0..40 {
            now = b.open_until;
            assert!(b.failure(now, &cfg));
        }
        assert_eq!(b.open_until - now, cfg.max_backoff);
    }
}

//! A token bucket: records a namespace may write, refilled at its rate,
//! holding at most one second's worth.

use std::time::{Duration, Instant};

/// See the module doc.
#[derive(Debug)]
pub(super) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket (a second's worth at `rate`).
    pub(super) fn full(rate: u64) -> Bucket {
        Bucket {
            tokens: rate as f64,
            at: Instant::now(),
        }
    }

    /// Takes `n` records at `rate` a second, or says how long until they
    /// fit. A batch larger than a second's worth goes when the bucket is
    /// full and leaves it in debt, so the rate holds on average.
    pub(super) fn take(&mut self, rate: u64, n: usize, now: Instant) -> Result<(), Duration> {
        let rate = rate as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        let need = (n as f64).min(rate);
        if self.tokens < need {
            return Err(Duration::from_secs_f64((need - self.tokens) / rate));
        }
        self.tokens -= n as f64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_holds_its_rate_and_refills() {
        let t0 = Instant::now();
        let mut b = Bucket {
            tokens: 10.0,
            at: t0,
        };
        for _ in 0..10 {
            b.take(10, 1, t0).unwrap();
        }
        let wait = b.take(10, 1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // Half a second later, five more.
        let t1 = t0 + Duration::from_millis(500);
        b.take(10, 5, t1).unwrap();
        assert!(b.take(10, 1, t1).is_err());
        // Never more than a second's worth, however long it sat.
        let t2 = t1 + Duration::from_secs(60);
        b.take(10, 10, t2).unwrap();
        assert!(b.take(10, 1, t2).is_err());
        // A batch over the rate goes from a full bucket and leaves a debt.
        let t3 = t2 + Duration::from_secs(1);
        b.take(10, 25, t3).unwrap();
        let wait = b.take(10, 1, t3).unwrap_err();
        assert!((wait.as_secs_f64() - 1.6).abs() < 1e-6, "{wait:?}");
    }
}

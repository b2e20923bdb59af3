//! Scenario time versus real time.
//!
//! Scenarios speak in days (certificate validity, renewal points); an embedded run may compress a
//! day into a few real seconds (`time_scale`). The embedded CA uses the clock to scale the real
//! validity of what it issues, so devices never need to know about compression: they read
//! `notBefore`/`notAfter` from their certificates, as real devices do.

use std::time::Duration;

const REAL_DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    day: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        Self::real()
    }
}

impl Clock {
    /// One scenario day is one real day.
    pub fn real() -> Self {
        Self { day: REAL_DAY }
    }

    /// One scenario day lasts `day` of real time.
    pub fn compressed(day: Duration) -> Self {
        Self { day }
    }

    /// The real duration of `days` scenario days, `Duration::MAX` past what a `Duration` holds.
    pub fn days(&self, days: f64) -> Duration {
        Duration::try_from_secs_f64(self.day.as_secs_f64() * days.max(0.0)).unwrap_or(Duration::MAX)
    }

    pub fn is_compressed(&self) -> bool {
        self.day != REAL_DAY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_days_scale() {
        let c = Clock::compressed(Duration::from_secs(3));
        assert_eq!(c.days(10.0), Duration::from_secs(30));
        assert!(c.is_compressed());
        assert_eq!(Clock::real().days(1.0), REAL_DAY);
        let huge = Clock::compressed(Duration::from_secs(5_000_000_000_000_000_000));
        assert_eq!(huge.days(365.0), Duration::MAX);
    }
}

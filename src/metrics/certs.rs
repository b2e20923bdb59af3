//! Fleet certificate health: which certificate every device holds (and when it is due for renewal
//! and expires), renewal outcomes per renewal cycle, devices whose certificate expired before they
//! renewed it, revocations, and a timeline of renewal tries so a report can find a renewal storm
//! and the CA's latency during it.
//!
//! Devices report here when they obtain a certificate, try a renewal, give up on one, or are
//! revoked; a [`CertSnapshot`] classifies the held certificates at a moment (valid: before the
//! renewal point; expiring: past it; expired: past notAfter).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::sync::lock;

/// Renewal tries kept for the storm analysis; past this the timeline stops growing (memory stays
/// bounded on long soaks) and the report says it was truncated.
const MAX_TRIES: usize = 2_000_000;

#[derive(Debug, Clone, Copy)]
struct Held {
    renew_at: SystemTime,
    not_after: SystemTime,
}

/// One renewal try: seconds since the recorder started, latency, whether the CA issued.
#[derive(Debug, Clone, Copy)]
struct Try {
    second: u32,
    latency_us: u32,
    ok: bool,
}

pub struct CertHealth {
    start: Instant,
    held: Mutex<HashMap<String, Held>>,
    renewals_ok: AtomicU64,
    renewals_given_up: AtomicU64,
    renewal_tries_failed: AtomicU64,
    expired_before_renewal: AtomicU64,
    revoked: AtomicU64,
    tries: Mutex<Vec<Try>>,
}

impl Default for CertHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl CertHealth {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            held: Mutex::new(HashMap::new()),
            renewals_ok: AtomicU64::new(0),
            renewals_given_up: AtomicU64::new(0),
            renewal_tries_failed: AtomicU64::new(0),
            expired_before_renewal: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            tries: Mutex::new(Vec::new()),
        }
    }

    /// `device` now holds a certificate due for renewal at `renew_at` and expiring at `not_after`.
    pub fn hold(&self, device: &str, renew_at: SystemTime, not_after: SystemTime) {
        lock(&self.held).insert(
            device.to_string(),
            Held {
                renew_at,
                not_after,
            },
        );
    }

    /// One try at renewing, started at `start` and answered at `end`.
    pub fn renewal_try(&self, start: Instant, end: Instant, ok: bool) {
        if ok {
            self.renewals_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.renewal_tries_failed.fetch_add(1, Ordering::Relaxed);
        }
        let second = u32::try_from(start.saturating_duration_since(self.start).as_secs())
            .unwrap_or(u32::MAX);
        let latency_us =
            u32::try_from(end.saturating_duration_since(start).as_micros()).unwrap_or(u32::MAX);
        let mut tries = lock(&self.tries);
        if tries.len() < MAX_TRIES {
            tries.push(Try {
                second,
                latency_us,
                ok,
            });
        }
    }

    /// A device stopped retrying a renewal (its deadline passed).
    pub fn renewal_given_up(&self) {
        self.renewals_given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// A device's certificate reached notAfter before a renewal succeeded.
    pub fn expired_before_renewal(&self) {
        self.expired_before_renewal.fetch_add(1, Ordering::Relaxed);
    }

    /// A device's certificate was revoked: it no longer counts among held certificates.
    pub fn revoked(&self, device: &str) {
        lock(&self.held).remove(device);
        self.revoked.fetch_add(1, Ordering::Relaxed);
    }

    /// The certificates held now and the counters so far.
    pub fn snapshot(&self) -> CertSnapshot {
        let now = SystemTime::now();
        let mut s = CertSnapshot::default();
        let mut remaining: Vec<f64> = Vec::new();
        for h in lock(&self.held).values() {
            match h.not_after.duration_since(now) {
                Err(_) => s.expired += 1,
                Ok(left) => {
                    remaining.push(left.as_secs_f64());
                    if now >= h.renew_at {
                        s.expiring += 1;
                    } else {
                        s.valid += 1;
                    }
                }
            }
        }
        s.time_to_expiry_seconds = Quantiles::of(&mut remaining);
        s.renewals_ok = self.renewals_ok.load(Ordering::Relaxed);
        s.renewals_given_up = self.renewals_given_up.load(Ordering::Relaxed);
        s.renewal_tries_failed = self.renewal_tries_failed.load(Ordering::Relaxed);
        s.expired_before_renewal = self.expired_before_renewal.load(Ordering::Relaxed);
        s.revoked = self.revoked.load(Ordering::Relaxed);
        s
    }

    /// The busiest moments of renewal: the peak rate (over one second) and the CA's latency over
    /// the busiest `window` (ten seconds is a good choice).
    pub fn storm(&self, window: Duration) -> Storm {
        let tries = lock(&self.tries);
        let window_s = window.as_secs().max(1) as u32;
        let last = tries.iter().map(|t| t.second).max().unwrap_or(0) as usize;
        let mut per_second = vec![0u64; last + 1];
        for t in tries.iter().filter(|t| t.ok) {
            per_second[t.second as usize] += 1;
        }
        let (peak_second, peak) = per_second
            .iter()
            .enumerate()
            .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
            .map_or((0, 0), |(i, n)| (i as u32, *n));
        // Busiest window: the one with most tries (ok or not), found with a running sum.
        let mut all_per_second = vec![0u64; last + 1];
        for t in tries.iter() {
            all_per_second[t.second as usize] += 1;
        }
        let w = window_s as usize;
        let (mut best_start, mut best, mut sum) = (0usize, 0u64, 0u64);
        for i in 0..all_per_second.len() {
            sum += all_per_second[i];
            if i >= w {
                sum -= all_per_second[i - w];
            }
            if sum > best {
                best = sum;
                best_start = (i + 1).saturating_sub(w);
            }
        }
        // The first window reaching the maximum may begin with idle seconds: start it at the
        // first busy one (the window then holds the same tries, since none can hold more).
        while best_start + 1 < all_per_second.len() && all_per_second[best_start] == 0 {
            best_start += 1;
        }
        let from = best_start as u32;
        let to = from + window_s;
        let mut latencies: Vec<f64> = tries
            .iter()
            .filter(|t| t.second >= from && t.second < to)
            .map(|t| f64::from(t.latency_us) / 1000.0)
            .collect();
        let failed = tries
            .iter()
            .filter(|t| t.second >= from && t.second < to && !t.ok)
            .count() as u64;
        Storm {
            peak_renewals_per_second: peak,
            peak_at_second: peak_second,
            window_start_second: from,
            window_seconds: window_s,
            window_tries: latencies.len() as u64,
            window_failed_tries: failed,
            window_ca_latency_ms: Quantiles::of(&mut latencies),
            truncated: tries.len() >= MAX_TRIES,
        }
    }
}

/// Summary statistics of a set of values (zeros when empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub count: u64,
    pub min: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    /// Nearest-rank quantiles of `values` (sorted in place).
    pub fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Self {
            count: values.len() as u64,
            min: values[0],
            p10: at(0.10),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }
}

/// The fleet's certificates at one moment, and the renewal counters so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertSnapshot {
    /// Held certificates not yet at their renewal point.
    pub valid: u64,
    /// Held certificates past their renewal point, not yet expired.
    pub expiring: u64,
    /// Held certificates past notAfter.
    pub expired: u64,
    /// Real seconds each held, unexpired certificate has left.
    pub time_to_expiry_seconds: Quantiles,
    /// Renewals that ended with a new certificate.
    pub renewals_ok: u64,
    /// Renewals abandoned at their deadline.
    pub renewals_given_up: u64,
    /// Failed tries (each retried until the deadline).
    pub renewal_tries_failed: u64,
    /// Devices whose certificate reached notAfter before a renewal succeeded.
    pub expired_before_renewal: u64,
    pub revoked: u64,
}

impl CertSnapshot {
    /// Renewals that succeeded, over renewals that ended (succeeded or given up); 1 with none.
    pub fn renewal_success_ratio(&self) -> f64 {
        let ended = self.renewals_ok + self.renewals_given_up;
        match ended {
            0 => 1.0,
            n => self.renewals_ok as f64 / n as f64,
        }
    }
}

/// The peak of renewal activity and the CA's latency around it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Storm {
    /// Most successful renewal requests started within one second of the run (the demand the
    /// CA met; the CA's own rate limit shows in the latency).
    pub peak_renewals_per_second: u64,
    /// That second, counted from the start of the recorder.
    pub peak_at_second: u32,
    /// The busiest window of renewal tries.
    pub window_start_second: u32,
    pub window_seconds: u32,
    pub window_tries: u64,
    pub window_failed_tries: u64,
    /// `ca.renew` latency of the window's tries, in milliseconds.
    pub window_ca_latency_ms: Quantiles,
    /// The try timeline hit its size limit; later tries are missing from the window.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_held_certificates() {
        let h = CertHealth::new();
        let now = SystemTime::now();
        let s = Duration::from_secs;
        h.hold("valid", now + s(50), now + s(100));
        h.hold("expiring", now - s(1), now + s(100));
        h.hold("expired", now - s(10), now - s(1));
        h.hold("gone", now + s(50), now + s(100));
        h.revoked("gone");
        let snap = h.snapshot();
        assert_eq!((snap.valid, snap.expiring, snap.expired), (1, 1, 1));
        assert_eq!(snap.revoked, 1);
        assert_eq!(snap.time_to_expiry_seconds.count, 2);
        assert!(snap.time_to_expiry_seconds.max <= 100.0);
    }

    #[test]
    fn storm_finds_the_peak_second_and_window() {
        let h = CertHealth::new();
        let t0 = h.start;
        let ms = Duration::from_millis;
        for i in 0..5 {
            h.renewal_try(
                t0 + Duration::from_secs(2) + ms(i),
                t0 + Duration::from_secs(3),
                true,
            );
        }
        h.renewal_try(
            t0 + Duration::from_secs(30),
            t0 + Duration::from_secs(30) + ms(1),
            true,
        );
        h.renewal_try(
            t0 + Duration::from_secs(2),
            t0 + Duration::from_secs(2) + ms(5),
            false,
        );
        let storm = h.storm(Duration::from_secs(10));
        assert_eq!(storm.peak_renewals_per_second, 5);
        assert_eq!(storm.peak_at_second, 2);
        assert_eq!(storm.window_tries, 6);
        assert_eq!(storm.window_failed_tries, 1);
        assert!(storm.window_ca_latency_ms.max >= 990.0);
        let snap = h.snapshot();
        assert_eq!((snap.renewals_ok, snap.renewal_tries_failed), (6, 1));
        h.renewal_given_up();
        assert!((h.snapshot().renewal_success_ratio() - 6.0 / 7.0).abs() < 1e-9);
    }
}

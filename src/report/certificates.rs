//! The report's certificate-lifecycle section: fleet certificate health at the end of the run,
//! renewals (success ratio, expired before renewal, the storm peak and the CA's latency in it),
//! certificate swaps (QoS 1 messages lost or duplicated, checked against the hub) and
//! revocations (cut-off, devices still online after revocation). The `swap.gap` and
//! `revoke.cutoff` distributions are in the phase table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::metrics::certs::{CertSnapshot, Storm};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CertificateReport {
    /// Real seconds per scenario day (86400 without compression), to read times in days.
    pub day_seconds: f64,
    /// Held certificates and renewal counters at the end of the run.
    pub health: CertSnapshot,
    pub renewal_success_ratio: f64,
    /// The busiest second and ten seconds of renewals.
    pub storm: Storm,
    pub swap: SwapReport,
    /// Present when the scenario revoked certificates.
    pub revocation: Option<RevocationSummary>,
    /// On a report merged from shards: which of these figures are not exact (see [`merge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_note: Option<String>,
}

/// What [`merge`] cannot combine exactly, said in the merged report.
pub const MERGE_NOTE: &str = "merged from shards: time-to-expiry count, min and max are exact; its \
    p10-p99 are the shard's with the most certificates and the renewal storm the busiest \
    shard's (shards keep neither per-certificate samples nor aligned per-second counts)";

/// Certificate swaps and what the hub received compared with what the devices sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwapReport {
    /// `break-before-make` or `make-before-break`.
    pub mode: String,
    pub swaps: u64,
    /// Devices compared with the hub's per-device count (revoked devices are left out: the hub
    /// cuts them off mid-stream on purpose). Zero against a real hub, which does not count.
    pub devices_compared: u64,
    /// QoS 1 messages the devices sent that the hub never received.
    pub qos1_lost: u64,
    /// Messages the hub received more often than the devices sent them.
    pub qos1_duplicated: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationSummary {
    /// The embedded CA disabled revoked devices in the hub (EZCA's "disable device on revoke").
    pub disable_device_on_revoke: bool,
    /// Against a remote CA and hub, whose settings the run cannot see: the counts below are what
    /// the devices observed.
    #[serde(default)]
    pub remote: bool,
    pub requested: u64,
    pub revoked: u64,
    pub by_self: u64,
    pub by_admin: u64,
    /// Revocations the CA refused.
    pub failed: u64,
    /// Revoked devices whose connection was dropped.
    pub cut_off: u64,
    /// Revoked devices still connected when the run ended.
    pub still_online: u64,
    /// Revoked devices whose reconnect the hub refused.
    pub reconnects_refused: u64,
}

impl CertificateReport {
    /// The section as text, for the end of the terminal report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let h = &self.health;
        let days = |secs: f64| match self.day_seconds > 0.0 {
            true => secs / self.day_seconds,
            false => 0.0,
        };
        let _ = writeln!(
            s,
            "certificates: {} valid, {} expiring, {} expired, {} revoked at the end",
            h.valid, h.expiring, h.expired, h.revoked
        );
        if let Some(note) = &self.merge_note {
            let _ = writeln!(s, "  ({note})");
        }
        let t = &h.time_to_expiry_seconds;
        if t.count > 0 {
            let _ = writeln!(
                s,
                "  time to expiry: min {:.1} s ({:.2} d), p50 {:.1} s ({:.2} d), max {:.1} s ({:.2} d)",
                t.min,
                days(t.min),
                t.p50,
                days(t.p50),
                t.max,
                days(t.max)
            );
        }
        let _ = writeln!(
            s,
            "renewals: {} ok, {} given up, {} failed tries; success ratio {:.4}; expired_before_renewal {}",
            h.renewals_ok,
            h.renewals_given_up,
            h.renewal_tries_failed,
            self.renewal_success_ratio,
            h.expired_before_renewal
        );
        self.write_storm(&mut s);
        let w = &self.swap;
        let _ = writeln!(
            s,
            "swaps: {} {}; QoS 1 across {} devices: {} lost, {} duplicated (see swap.gap above)",
            w.swaps, w.mode, w.devices_compared, w.qos1_lost, w.qos1_duplicated
        );
        self.write_revocation(&mut s);
        s
    }

    /// The renewal storm, when the run had renewals.
    fn write_storm(&self, s: &mut String) {
        if self.storm.window_tries > 0 {
            let _ = writeln!(s, "  storm: {}", self.storm_summary());
        }
    }

    /// The renewal storm in one line: its peak, and the CA's latency over its busiest window.
    fn storm_summary(&self) -> String {
        let st = &self.storm;
        let l = &st.window_ca_latency_ms;
        format!(
            "peak {} renewal requests/s (started in one second, later answered with a certificate) at {} s; busiest {} s from {} s: {} tries ({} failed), ca.renew p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
            st.peak_renewals_per_second,
            st.peak_at_second,
            st.window_seconds,
            st.window_start_second,
            st.window_tries,
            st.window_failed_tries,
            l.p50,
            l.p99,
            l.max,
            if st.truncated {
                " (timeline truncated)"
            } else {
                ""
            }
        )
    }

    fn write_revocation(&self, s: &mut String) {
        if let Some(r) = &self.revocation {
            let _ = writeln!(
                s,
                "revocation ({}): {} (see revoke.cutoff above)",
                r.mode(),
                r.summary()
            );
        }
    }
}

impl RevocationSummary {
    /// Who was told of the revocations and how the cut-off was seen.
    fn mode(&self) -> &'static str {
        match (self.remote, self.disable_device_on_revoke) {
            (true, _) => "remote CA and hub, as the devices saw it",
            (false, true) => "disable device on revoke",
            (false, false) => "hub not told",
        }
    }

    fn summary(&self) -> String {
        format!(
            "{} requested, {} revoked ({} self, {} admin), {} failed; {} cut off, {} reconnects refused, {} still online",
            self.requested,
            self.revoked,
            self.by_self,
            self.by_admin,
            self.failed,
            self.cut_off,
            self.reconnects_refused,
            self.still_online
        )
    }
}

impl CertificateReport {
    /// The section as HTML rows (label, value) for the report page.
    pub fn rows(&self) -> Vec<(String, String)> {
        let h = &self.health;
        let t = &h.time_to_expiry_seconds;
        let w = &self.swap;
        let mut rows = vec![
            (
                "certificates at the end".into(),
                format!(
                    "{} valid, {} expiring, {} expired, {} revoked",
                    h.valid, h.expiring, h.expired, h.revoked
                ),
            ),
            (
                "time to expiry (s)".into(),
                format!(
                    "min {:.1}, p10 {:.1}, p50 {:.1}, p90 {:.1}, max {:.1} (a day is {} s)",
                    t.min, t.p10, t.p50, t.p90, t.max, self.day_seconds
                ),
            ),
            (
                "renewals".into(),
                format!(
                    "{} ok, {} given up, {} failed tries, success ratio {:.4}",
                    h.renewals_ok,
                    h.renewals_given_up,
                    h.renewal_tries_failed,
                    self.renewal_success_ratio
                ),
            ),
            (
                "expired before renewal".into(),
                h.expired_before_renewal.to_string(),
            ),
            ("renewal storm".into(), self.storm_summary()),
            (
                "swaps".into(),
                format!(
                    "{} {}; QoS 1 over {} devices: {} lost, {} duplicated",
                    w.swaps, w.mode, w.devices_compared, w.qos1_lost, w.qos1_duplicated
                ),
            ),
        ];
        if let Some(r) = &self.revocation {
            let row = format!("{}; {}", r.summary(), r.mode());
            rows.push(("revocation".into(), row));
        }
        if let Some(note) = &self.merge_note {
            rows.push(("merged".into(), note.clone()));
        }
        rows
    }
}

/// The sections of several shards' reports as one: counts add up; held-certificate quantiles
/// and the storm come from the shard with the most certificates and the highest peak (shards'
/// timelines are not aligned, so their storms cannot be added second by second).
pub fn merge<'a>(
    sections: impl Iterator<Item = &'a CertificateReport>,
) -> Option<CertificateReport> {
    let mut merged: Option<CertificateReport> = None;
    for c in sections {
        let Some(m) = &mut merged else {
            merged = Some(c.clone());
            continue;
        };
        m.merge_note = Some(MERGE_NOTE.into());
        let (h, o) = (&mut m.health, &c.health);
        let (mine, theirs) = (h.time_to_expiry_seconds, o.time_to_expiry_seconds);
        if theirs.count > mine.count {
            h.time_to_expiry_seconds = theirs;
        }
        let t = &mut h.time_to_expiry_seconds;
        t.count = mine.count + theirs.count;
        // An empty side's zeros are no samples.
        match (mine.count, theirs.count) {
            (0, _) | (_, 0) => {}
            _ => (t.min, t.max) = (mine.min.min(theirs.min), mine.max.max(theirs.max)),
        }
        h.valid += o.valid;
        h.expiring += o.expiring;
        h.expired += o.expired;
        h.revoked += o.revoked;
        h.renewals_ok += o.renewals_ok;
        h.renewals_given_up += o.renewals_given_up;
        h.renewal_tries_failed += o.renewal_tries_failed;
        h.expired_before_renewal += o.expired_before_renewal;
        m.renewal_success_ratio = h.renewal_success_ratio();
        if c.storm.peak_renewals_per_second > m.storm.peak_renewals_per_second {
            m.storm = c.storm.clone();
        }
        m.swap.swaps += c.swap.swaps;
        m.swap.devices_compared += c.swap.devices_compared;
        m.swap.qos1_lost += c.swap.qos1_lost;
        m.swap.qos1_duplicated += c.swap.qos1_duplicated;
        if let Some(o) = &c.revocation {
            let r = m.revocation.get_or_insert_with(|| RevocationSummary {
                disable_device_on_revoke: o.disable_device_on_revoke,
                remote: o.remote,
                ..Default::default()
            });
            r.requested += o.requested;
            r.revoked += o.revoked;
            r.by_self += o.by_self;
            r.by_admin += o.by_admin;
            r.failed += o.failed;
            r.cut_off += o.cut_off;
            r.still_online += o.still_online;
            r.reconnects_refused += o.reconnects_refused;
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::certs::Quantiles;

    fn shard(count: u64, min: f64, p50: f64, max: f64) -> CertificateReport {
        let mut r = CertificateReport::default();
        r.health.valid = count;
        r.health.time_to_expiry_seconds = Quantiles {
            count,
            min,
            p50,
            max,
            ..Quantiles::default()
        };
        r
    }

    #[test]
    fn a_merge_is_exact_where_it_can_be_and_says_where_not() {
        let (a, b) = (shard(3, 5.0, 8.0, 9.0), shard(5, 2.0, 4.0, 7.0));
        let m = merge([&a, &b].into_iter()).unwrap();
        let t = m.health.time_to_expiry_seconds;
        assert_eq!((t.count, t.min, t.max), (8, 2.0, 9.0));
        assert_eq!(t.p50, 4.0, "the larger shard's");
        assert_eq!(m.health.valid, 8);
        assert_eq!(m.merge_note.as_deref(), Some(MERGE_NOTE));
        assert!(m.to_text_note_shown());
        // One report alone is not a merge.
        assert_eq!(merge([&a].into_iter()).unwrap().merge_note, None);
    }

    impl CertificateReport {
        fn to_text_note_shown(&self) -> bool {
            self.rows()
                .iter()
                .any(|(k, v)| k == "merged" && v == MERGE_NOTE)
        }
    }
}

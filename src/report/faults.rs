//! The faults a run injected (a scenario's `faults:`), each with when it happened and what it
//! did, so a report shows the chaos next to the latencies and losses it caused.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultEvent {
    /// Seconds from the start of the run.
    pub at_seconds: f64,
    /// `drop_connections`, `delay_pubacks`, `refuse_connects`, `restart_hub`, `ca_unavailable`.
    pub kind: String,
    /// How long it lasted (absent for dropping connections, which is at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lasting_seconds: Option<f64>,
    /// What it did, in words (`closed 12 of 40 live connections`).
    pub detail: String,
}

/// The faults section of the text report (empty without faults).
pub fn to_text(faults: &[FaultEvent]) -> String {
    let mut s = String::new();
    if faults.is_empty() {
        return s;
    }
    let _ = writeln!(s, "faults:");
    for f in faults {
        let lasting = f
            .lasting_seconds
            .map_or(String::new(), |l| format!(" for {l:.1} s"));
        let _ = writeln!(
            s,
            "  [{:>7.1}s] {}{lasting}: {}",
            f.at_seconds, f.kind, f.detail
        );
    }
    s
}

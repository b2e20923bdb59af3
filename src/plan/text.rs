//! The plan as `fleetsim plan` prints it: one line per figure with its limit and verdict, then
//! what to do about any line that does not fit.

use std::fmt::Write as _;

use super::model::{Plan, Verdict, number};

impl Plan {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan for {}: {} devices for {}, {} target, hub tier {}",
            self.scenario,
            number(self.devices as f64),
            duration(self.duration_secs),
            if self.remote { "remote" } else { "embedded" },
            match &self.tier {
                Some(t) => format!("{} x {} ({})", t.sku, t.units, self.tier_source),
                None => format!("unknown ({})", self.tier_source),
            }
        );
        let _ = writeln!(
            s,
            "  {:<46} {:>12} {:>12} {:>14}  {:<10} limit",
            "", "per second", "per minute", "total", "verdict"
        );
        for l in &self.lines {
            let cell = |v: Option<f64>| v.map_or("-".to_string(), number);
            let _ = write!(
                s,
                "  {:<46} {:>12} {:>12} {:>14}  {:<10} {}",
                l.what,
                cell(l.per_second),
                cell(l.per_minute),
                cell(l.total),
                l.verdict.word(),
                l.limit
            );
            if !l.note.is_empty() {
                let _ = write!(s, "; {}", l.note);
            }
            s.push('\n');
        }
        let exceeding = self.exceeding().count();
        let throttled = self.throttled().count();
        let unknown = self
            .lines
            .iter()
            .filter(|l| l.verdict == Verdict::Unknown)
            .count();
        let _ = match (exceeding, throttled) {
            (0, 0) if unknown == 0 => writeln!(s, "verdict: fits"),
            (0, 0) => writeln!(
                s,
                "verdict: {unknown} line(s) unknown without the hub's tier"
            ),
            (0, t) => writeln!(
                s,
                "verdict: fits, {t} line(s) throttled (the run will be slower than asked)"
            ),
            (e, _) => writeln!(
                s,
                "verdict: EXCEEDS on {e} line(s); `fleetsim run` refuses it against a remote target unless --accept-plan"
            ),
        };
        s
    }
}

fn duration(secs: f64) -> String {
    match secs {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

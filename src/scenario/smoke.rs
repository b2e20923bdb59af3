//! Smoke form of a scenario (`fleetsim run --smoke`, `--max-devices`, `--max-duration`): the same
//! scenario with fewer devices and a shorter run, its shape kept. Devices shrink by a factor `f`
//! (cohorts with fixed counts with them, shares unchanged) and time by a factor `g`: the
//! duration, every event's instant and repeat, the arrival stages and `time_scale` (so a
//! certificate renews as many times in the shorter run, though no certificate lives less than
//! [`MIN_CERT_LIFE`]) are multiplied by `g`, and arrival rates by `f / g` (the fleet still
//! arrives over the same share of the run). Cohorts by share keep at least one device each. Telemetry schedules,
//! timeouts, fleet limits and the emulators' capacities stay as written: they describe the
//! services, which a smaller fleet loads less. The result is validated again like a file.

use std::time::Duration;

use super::units::{Rate, Span};
use super::{Scenario, Target};

/// Defaults of `--smoke`.
pub const SMOKE_DEVICES: u32 = 10;
pub const SMOKE_DURATION: Duration = Duration::from_secs(10);

/// The shortest real lifetime a smoke form gives certificates (see [`shrink_time`]).
pub const MIN_CERT_LIFE: Duration = Duration::from_secs(10);

/// The ceilings of a smoke run; `None` leaves that dimension as written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shrink {
    pub max_devices: Option<u32>,
    pub max_duration: Option<Duration>,
}

impl Shrink {
    /// What `--smoke` means: at most [`SMOKE_DEVICES`] devices for [`SMOKE_DURATION`].
    pub fn smoke() -> Self {
        Self {
            max_devices: Some(SMOKE_DEVICES),
            max_duration: Some(SMOKE_DURATION),
        }
    }

    pub fn is_none(&self) -> bool {
        self.max_devices.is_none() && self.max_duration.is_none()
    }
}

/// `scenario` in its smoke form, with a line saying what changed (`None` when nothing did), or
/// why the shrunk scenario is not valid.
pub fn shrink(scenario: &Scenario, limits: Shrink) -> Result<(Scenario, Option<String>), String> {
    let mut s = scenario.clone();
    let devices = s.fleet.devices.get();
    let f = match limits.max_devices {
        Some(0) => return Err("--max-devices must be at least 1".into()),
        Some(max) if max < devices => f64::from(max) / f64::from(devices),
        _ => 1.0,
    };
    let duration = s.duration.0;
    let g = match limits.max_duration {
        Some(max) if max.is_zero() => return Err("--max-duration must be more than 0s".into()),
        Some(max) if max < duration => max.as_secs_f64() / duration.as_secs_f64(),
        _ => 1.0,
    };
    if f == 1.0 && g == 1.0 {
        return Ok((s, None));
    }
    shrink_devices(&mut s, f);
    shrink_time(&mut s, g);
    scale_rates(&mut s, f / g);
    super::validate::scenario(&s)
        .map_err(|(_, message)| format!("the smoke form is not valid: {message}"))?;
    let note = format!(
        "smoke form: {} of {devices} devices, {:.1}s of {:.1}s (times x{g:.3}, arrival rates x{:.3})",
        s.fleet.devices,
        s.duration.0.as_secs_f64(),
        duration.as_secs_f64(),
        f / g
    );
    Ok((s, Some(note)))
}

/// Fleet and fixed cohort counts times `f`, each at least 1 (the fleet then is their sum); with
/// shares, at least enough devices that every cohort gets one.
fn shrink_devices(s: &mut Scenario, f: f64) {
    let scaled = |n: u32| ((f64::from(n) * f).round() as u32).max(1);
    let mut devices = scaled(s.fleet.devices.get());
    let cohorts = &mut s.fleet.cohorts;
    if cohorts.iter().any(|c| c.value.devices.is_some()) {
        for c in cohorts.iter_mut() {
            c.value.devices = c
                .value
                .devices
                .and_then(|n| std::num::NonZeroU32::new(scaled(n.get())));
        }
        devices = cohorts
            .iter()
            .filter_map(|c| c.value.devices)
            .map(|n| n.get())
            .sum();
    } else if !cohorts.is_empty() {
        let written = s.fleet.devices.get();
        while devices < written && super::cohort::sizes(devices, cohorts).contains(&0) {
            devices += 1;
        }
    }
    if let Some(n) = std::num::NonZeroU32::new(devices) {
        s.fleet.devices = n;
    }
    if let Some(a) = &mut s.fleet.arrival
        && let Some(n) = a.value.max_in_flight
    {
        a.value.max_in_flight = std::num::NonZeroU32::new(scaled(n.get()));
    }
}

/// The run's duration, event instants and repeats, faults' instants and windows, arrival stages
/// and `time_scale` times `g`.
fn shrink_time(s: &mut Scenario, g: f64) {
    let scaled = |d: Duration| d.mul_f64(g);
    s.duration = Span(scaled(s.duration.0));
    let shortest = s
        .certificate_policies()
        .iter()
        .map(|p| p.validity_days.get())
        .min();
    if let (Some(scale), Some(days)) = (&mut s.time_scale, shortest) {
        // Certificates live no less than MIN_CERT_LIFE: shorter, a renewal's key generation and
        // CA round trip (RSA on a loaded machine) take a share of the lifetime the written
        // scenario never asked for. Already shorter ones stay as written.
        let life = scale.value.0.as_secs_f64() * f64::from(days);
        let floor = MIN_CERT_LIFE.as_secs_f64() / life;
        scale.value = Span(scale.value.0.mul_f64(g.max(floor).min(1.0)));
    }
    for e in &mut s.events {
        e.value.at = Span(scaled(e.value.at.0));
        if let Some(q) = &mut e.value.query
            && let Some(every) = &mut q.every
        {
            *every = Span(scaled(every.0));
        }
    }
    for f in &mut s.faults {
        // A fault keeps its place in the run and its share of it (windows and downtimes too).
        let f = &mut f.value;
        f.at = Span(scaled(f.at.0));
        for window in [
            &mut f.delay_pubacks,
            &mut f.lasting,
            &mut f.refuse_connects,
            &mut f.restart_hub,
            &mut f.ca_unavailable,
        ] {
            *window = window.map(|w| Span(scaled(w.0)));
        }
    }
    let arrivals = std::iter::once(&mut s.fleet.arrival)
        .chain(s.fleet.cohorts.iter_mut().map(|c| &mut c.value.arrival));
    for arrival in arrivals.flatten() {
        for stage in &mut arrival.value.stages {
            let st = &mut stage.value;
            st.over = st.over.map(|o| Span(scaled(o.0)));
            st.hold = st.hold.map(|h| Span(scaled(h.0)));
        }
    }
}

/// Arrival rates (short form, open model, ramps; the fleet's and the cohorts') times `k`.
fn scale_rates(s: &mut Scenario, k: f64) {
    if let Some(r) = &mut s.fleet.arrival_rate {
        r.value = Rate(r.value.0 * k);
    }
    let arrivals = std::iter::once(&mut s.fleet.arrival)
        .chain(s.fleet.cohorts.iter_mut().map(|c| &mut c.value.arrival));
    for arrival in arrivals.flatten() {
        let a = &mut arrival.value;
        a.rate = a.rate.map(|r| Rate(r.0 * k));
        for stage in &mut a.stages {
            stage.value.ramp_to = stage.value.ramp_to.map(|r| Rate(r.0 * k));
        }
    }
}

/// Whether the scenario runs against the embedded emulators (a smoke test can run it alone).
pub fn is_embedded(s: &Scenario) -> bool {
    matches!(s.target.value, Target::Embedded(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Scenario {
        super::super::parse(text, Path::new("s.yaml")).unwrap()
    }

    const BIG: &str = "name: big\nduration: 60s\ntime_scale: 6s\ntarget:\n  embedded: {}\n\
        fleet:\n  devices: 1000\n  arrival:\n    rate: 10/s\n    stages:\n      - {ramp_to: 100/s, over: 30s}\n      - {hold: 12s}\n\
        certificate:\n  validity_days: 10\n\
        events:\n  - at: 30s\n    query: {text: \"SELECT * FROM devices\", every: 12s}\n";

    #[test]
    fn smoke_keeps_the_shape() {
        let (s, note) = shrink(&parse(BIG), Shrink::smoke()).unwrap();
        assert_eq!(s.fleet.devices.get(), 10);
        assert_eq!(s.duration.0, Duration::from_secs(10));
        // Time x1/6, devices x1/100: rates x6/100.
        assert_eq!(
            s.time_scale.as_ref().unwrap().value.0,
            Duration::from_secs(1)
        );
        let a = s.fleet.arrival.as_ref().unwrap();
        assert!((a.value.rate.unwrap().0 - 0.6).abs() < 1e-9);
        assert!((a.value.stages[0].value.ramp_to.unwrap().0 - 6.0).abs() < 1e-9);
        assert_eq!(
            a.value.stages[0].value.over.unwrap().0,
            Duration::from_secs(5)
        );
        assert_eq!(
            a.value.stages[1].value.hold.unwrap().0,
            Duration::from_secs(2)
        );
        let e = &s.events[0].value;
        assert_eq!(e.at.0, Duration::from_secs(5));
        assert_eq!(
            e.query.as_ref().unwrap().every.unwrap().0,
            Duration::from_secs(2)
        );
        assert!(note.unwrap().contains("10 of 1000 devices"));
    }

    #[test]
    fn a_small_scenario_is_left_as_written() {
        let small = parse(
            "name: s\nduration: 5s\ntarget:\n  embedded: {}\nfleet:\n  devices: 3\n  arrival_rate: 3/s\n",
        );
        let (s, note) = shrink(&small, Shrink::smoke()).unwrap();
        assert!(note.is_none());
        assert_eq!(
            (s.fleet.devices.get(), s.duration.0),
            (3, Duration::from_secs(5))
        );
    }

    #[test]
    fn zero_limits_are_refused() {
        let s = parse(BIG);
        let none = Shrink {
            max_devices: Some(0),
            max_duration: None,
        };
        assert!(shrink(&s, none).unwrap_err().contains("--max-devices"));
    }
}

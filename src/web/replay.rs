//! The replay source: the page of a finished run, drawn from its JSON report (the fleet map it
//! keeps at the end of the scenario's duration, its timeline, errors and thresholds).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::frame::{self, Frame, Meta};
use super::types::{DeviceInfo, WebError};
use crate::metrics::DeviceState;
use crate::metrics::board::FleetMap;
use crate::report::Report;
use crate::report::timeline::TimelinePoint;

/// A report's map, decoded once.
pub struct Replay {
    pub meta: Meta,
    pub history: Vec<TimelinePoint>,
    pub frame: Frame,
    ids: Vec<String>,
    states: Vec<u8>,
    expiry: Vec<u32>,
    /// When the map was taken, Unix seconds (what expiry counts from).
    taken: u64,
    map: FleetMap,
}

impl Replay {
    /// The page of `report`; an error when the report has no map (older, or merged, reports).
    pub fn new(report: &Report) -> Result<Self, WebError> {
        let map = report.fleet_map.clone().ok_or(WebError::NoMap)?;
        let bad = |what: &str, e: String| WebError::BadMap(format!("{what}: {e}"));
        let states = map
            .state_bytes()
            .map_err(|e| bad("states", e.to_string()))?;
        let expiry_bytes = STANDARD
            .decode(&map.expiry)
            .map_err(|e| bad("expiry", e.to_string()))?;
        let expiry: Vec<u32> = expiry_bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let ids: Vec<String> = map.ids.lines().map(str::to_string).collect();
        if ids.len() != states.len() || expiry.len() != states.len() {
            return Err(bad(
                "sizes",
                format!(
                    "{} ids, {} states, {} expiries",
                    ids.len(),
                    states.len(),
                    expiry.len()
                ),
            ));
        }
        let taken = started_unix(&report.started_at) + map.t as u64;
        let history: Vec<TimelinePoint> = report
            .timeline
            .as_ref()
            .map(|t| t.points.iter().map(frame::light).collect())
            .unwrap_or_default();
        let gauges = crate::metrics::board::count_states(&states)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v as i64))
            .collect();
        let frame = Frame {
            t: map.t,
            done: true,
            states: map.states.clone(),
            gauges,
            point: history.last().cloned(),
            errors: report.errors.clone(),
            thresholds: report.thresholds.clone(),
            verdict: true,
            expiry: frame::expiry_histogram(&expiry, taken),
            events: map.events.clone(),
        };
        let meta = Meta {
            title: report.scenario.clone(),
            duration_s: map.t,
            cohorts: map.cohorts.clone(),
            state_names: DeviceState::ALL.iter().map(|s| s.name()).collect(),
            replay: true,
        };
        Ok(Self {
            meta,
            history,
            frame,
            ids,
            states,
            expiry,
            taken,
            map,
        })
    }

    /// What the hover shows for `slot`.
    pub fn device(&self, slot: usize) -> Option<DeviceInfo> {
        let state = DeviceState::ALL
            .get(usize::from(*self.states.get(slot)?))
            .map_or("?", |s| s.name());
        Some(DeviceInfo::new(
            slot,
            self.ids.get(slot)?.clone(),
            state,
            *self.expiry.get(slot)?,
            self.taken,
            self.map.errors.get(&(slot as u32)).cloned(),
        ))
    }
}

/// `started_at` (RFC 3339) as Unix seconds; 0 when it does not parse.
fn started_unix(started_at: &str) -> u64 {
    time::OffsetDateTime::parse(started_at, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::board::DeviceBoard;
    use crate::metrics::{DeviceState, Snapshot};

    fn report() -> Report {
        Report::new("r", "embedded", String::new(), 1.0, Snapshot::default()).unwrap()
    }

    #[test]
    fn a_report_without_a_map_or_with_a_damaged_one_is_refused() {
        let mut r = report();
        assert!(matches!(Replay::new(&r), Err(WebError::NoMap)));
        let devices = vec![(0, "a".to_string(), 0), (1, "b".to_string(), 0)];
        let board = DeviceBoard::new(&["c".into()], &devices);
        board.set_state(1, DeviceState::Revoked);
        board.set_error(1, "mqtt.reconnect/connack_3".into());
        let mut map = board.freeze();
        r.fleet_map = Some(map.clone());
        let replay = Replay::new(&r).unwrap();
        assert_eq!(replay.frame.gauges["revoked"], 1);
        let b = replay.device(1).unwrap();
        assert_eq!((b.id.as_str(), b.state), ("b", "revoked"));
        assert_eq!(b.last_error.as_deref(), Some("mqtt.reconnect/connack_3"));
        assert!(replay.device(2).is_none());
        map.ids = "a".into();
        r.fleet_map = Some(map);
        assert!(matches!(Replay::new(&r), Err(WebError::BadMap(_))));
    }
}

//! The live source: a frame per tick from the recorder's snapshot and the fleet board, and the
//! timeline the page draws its charts from (a [`Sampler`] of its own, one point per tick).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::frame::{self, Frame, Meta};
use crate::metrics::board::DeviceBoard;
use crate::metrics::{DeviceState, Recorder};
use crate::report::Report;
use crate::report::timeline::{Sampler, TimelinePoint};
use crate::scenario::Threshold;

/// What a live page watches.
pub struct LiveRun {
    pub title: String,
    pub duration: Duration,
    pub recorder: Arc<Recorder>,
    pub board: Arc<DeviceBoard>,
    pub thresholds: Vec<Threshold>,
    /// The report's threshold results, once the run has been reported: the final frame shows
    /// them instead of the live evaluation.
    pub verdict: Arc<OnceLock<Vec<crate::report::ThresholdResult>>>,
}

/// Builds the frames of a live run; one per tick.
pub struct Ticker {
    run: LiveRun,
    sampler: Sampler,
    /// Set once the board is frozen and the last frame built: nothing changes after it.
    last: Option<Frame>,
}

impl Ticker {
    /// `start` is when the run began; one timeline point is taken per `every`.
    pub fn new(run: LiveRun, start: Instant, every: Duration) -> Self {
        Self {
            run,
            sampler: Sampler::new(start, every),
            last: None,
        }
    }

    pub fn meta(&self) -> Meta {
        Meta {
            title: self.run.title.clone(),
            duration_s: self.run.duration.as_secs_f64(),
            cohorts: self.run.board.cohorts().to_vec(),
            state_names: DeviceState::ALL.iter().map(|s| s.name()).collect(),
            replay: false,
        }
    }

    /// The timeline so far, without histograms.
    pub fn history(&self) -> Vec<TimelinePoint> {
        self.sampler
            .timeline()
            .points
            .iter()
            .map(frame::light)
            .collect()
    }

    /// The frame of this moment (the final one again once the board is frozen).
    pub fn tick(&mut self) -> Frame {
        if let Some(last) = &mut self.last {
            if let (false, Some(verdict)) = (last.verdict, self.run.verdict.get()) {
                last.thresholds = verdict.clone();
                last.verdict = true;
            }
            return last.clone();
        }
        let board = &self.run.board;
        let done = board.is_frozen();
        let states = board.state_bytes();
        let snapshot = self.run.recorder.snapshot();
        self.sampler.sample(&snapshot, Instant::now());
        let point = self.sampler.timeline().points.last().map(frame::light);
        let gauges = snapshot
            .devices
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let errors = snapshot.errors.clone();
        let thresholds = self.thresholds(snapshot);
        let frame = Frame {
            t: board.elapsed().min(self.run.duration.as_secs_f64()),
            done,
            states: STANDARD.encode(&states),
            gauges,
            point,
            errors,
            thresholds,
            verdict: false,
            expiry: frame::expiry_histogram(&board.expiry_secs(), frame::unix_now()),
            events: board.events(),
        };
        if done {
            self.last = Some(frame.clone());
        }
        frame
    }

    /// The scenario's thresholds against what was recorded so far (figures only the end of the
    /// run knows, such as devices still revoked-online, show as "no samples" until then).
    fn thresholds(
        &self,
        snapshot: crate::metrics::Snapshot,
    ) -> Vec<crate::report::ThresholdResult> {
        if self.run.thresholds.is_empty() {
            return Vec::new();
        }
        let report = Report::new(&self.run.title, "live", String::new(), 0.0, snapshot);
        report
            .and_then(|r| crate::report::thresholds::evaluate(&self.run.thresholds, &r))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_carries_one_state_byte_per_device_and_the_gauges() {
        let recorder = Arc::new(Recorder::new());
        let devices: Vec<(u64, String, usize)> = (0..5).map(|i| (i, format!("d{i}"), 0)).collect();
        let board = Arc::new(DeviceBoard::new(&["default".into()], &devices));
        recorder.set_board(board.clone());
        recorder.transition(None, DeviceState::Online);
        board.set_state(2, DeviceState::Online);
        board.event("revoke", "revoke 20%: 1 devices".into());
        let run = LiveRun {
            title: "t".into(),
            duration: Duration::from_secs(10),
            recorder,
            board: board.clone(),
            thresholds: vec!["messages_lost == 0".parse().unwrap()],
            verdict: Default::default(),
        };
        let mut ticker = Ticker::new(run, Instant::now(), Duration::from_secs(1));
        let f = ticker.tick();
        assert_eq!(STANDARD.decode(&f.states).unwrap(), vec![0, 0, 3, 0, 0]);
        assert_eq!(f.gauges["online"], 1);
        assert_eq!(f.events.len(), 1);
        assert_eq!(f.thresholds.len(), 1);
        assert!(!f.done);
        board.freeze();
        board.set_state(2, DeviceState::Done);
        let last = ticker.tick();
        assert!(last.done);
        assert_eq!(STANDARD.decode(&last.states).unwrap()[2], 3);
        assert_eq!(ticker.history().len(), 2);
    }
}

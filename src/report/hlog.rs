//! The interval log (`.hlog`): during a run, every `report.interval` the histograms of what was
//! recorded since the previous interval, one per phase × outcome, in HdrHistogram's interval-log
//! format (readable by `HistogramLogProcessor`, HdrHistogram's log analyzers, and
//! `hdrhistogram::serialization::interval_log`). Tags are `phase/outcome` for latency from the
//! intended start and `phase/outcome/uncorrected` for latency from the actual start. Values are
//! microseconds; timestamps are seconds since the run began (`BaseTime`).
//!
//! An interval is the difference of two cumulative snapshots (`Histogram::subtract`), which is
//! exact because counts only grow, so the intervals of a tag always sum to the run's total.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use super::error::ReportError;
use super::stats::HistogramMap;
use crate::metrics::Snapshot;

/// Where the interval log of the report at `report` goes: the same path with `.hlog`.
pub fn hlog_path(report: &Path) -> PathBuf {
    report.with_extension("hlog")
}

pub struct IntervalLog {
    path: PathBuf,
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
    run_start: Instant,
    /// End of the previous interval, from `run_start`.
    last: Duration,
    previous: HistogramMap,
    previous_uncorrected: HistogramMap,
}

impl IntervalLog {
    /// Creates (or truncates) the log at `path` and writes its header. `run_start` is the run's
    /// start on the monotonic clock, `wall_start` the same moment on the wall clock.
    pub fn create(
        path: &Path,
        scenario: &str,
        run_start: Instant,
        wall_start: SystemTime,
    ) -> Result<Self, ReportError> {
        let file = File::create(path).map_err(|source| write_error(path, source))?;
        let mut log = Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            serializer: V2DeflateSerializer::new(),
            run_start,
            last: Duration::ZERO,
            previous: HistogramMap::new(),
            previous_uncorrected: HistogramMap::new(),
        };
        IntervalLogWriterBuilder::new()
            .add_comment(&format!("fleetsim interval log: scenario {scenario}"))
            .add_comment("values in microseconds; tags are phase/outcome[/uncorrected]")
            .with_start_time(wall_start)
            .with_base_time(wall_start)
            .begin_log_with(&mut log.out, &mut log.serializer)
            .map_err(|source| write_error(path, source))?;
        log.flush()?;
        Ok(log)
    }

    /// Appends the interval from the previous call (or the run's start) to `now`: for every
    /// phase × outcome, what `snapshot` holds beyond the previous snapshot.
    pub fn write_interval(&mut self, snapshot: &Snapshot, now: Instant) -> Result<(), ReportError> {
        let end = now.saturating_duration_since(self.run_start).max(self.last);
        let (start, length) = (self.last, end - self.last);
        let mut lines = Vec::new();
        for (key, h) in &snapshot.latency {
            let tag = format!("{}/{}", key.0.name(), key.1.name());
            lines.push((tag, difference(h, self.previous.get(key))?));
        }
        for (key, h) in &snapshot.uncorrected {
            let tag = format!("{}/{}/uncorrected", key.0.name(), key.1.name());
            lines.push((tag, difference(h, self.previous_uncorrected.get(key))?));
        }
        // No header: the builder writes only what it was configured with. (Hence no
        // MaxValueDivisor either: it applies per writer, and the max column stays in µs.)
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.out, &mut self.serializer)
            .map_err(|source| write_error(&self.path, source))?;
        for (tag, h) in lines.iter().filter(|(_, h)| !h.is_empty()) {
            writer
                .write_histogram(h, start, length, Tag::new(tag))
                .map_err(|e| ReportError::Histogram(format!("interval log: {e}")))?;
        }
        self.flush()?;
        self.previous = snapshot.latency.clone();
        self.previous_uncorrected = snapshot.uncorrected.clone();
        self.last = end;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ReportError> {
        self.out
            .flush()
            .map_err(|source| write_error(&self.path, source))
    }
}

fn difference(
    now: &Histogram<u64>,
    before: Option<&Histogram<u64>>,
) -> Result<Histogram<u64>, ReportError> {
    let mut h = now.clone();
    if let Some(before) = before {
        h.subtract(before)
            .map_err(|e| ReportError::Histogram(format!("interval: {e:?}")))?;
    }
    Ok(h)
}

fn write_error(path: &Path, source: std::io::Error) -> ReportError {
    ReportError::Write {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Outcome, Phase, Recorder};
    use crate::report::stats::decode;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use std::collections::BTreeMap;

    #[test]
    fn intervals_parse_back_and_sum_to_the_totals() {
        let dir = std::env::temp_dir().join(format!("fleetsim-hlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = hlog_path(&dir.join("run.json"));
        assert_eq!(path, dir.join("run.hlog"));

        let r = Recorder::new();
        let t0 = Instant::now();
        let mut log = IntervalLog::create(&path, "unit", t0, SystemTime::now()).unwrap();
        let mut intervals = 0;
        for round in 1..=3u64 {
            for i in 0..100 * round {
                let end = t0 + Duration::from_micros(500 + i * 13);
                r.record(Phase::CaIssue, Outcome::Ok, t0, end);
                r.record_with_actual(Phase::MqttPublish, Outcome::Ok, t0, t0, end);
            }
            if round == 2 {
                r.record(
                    Phase::CaIssue,
                    Outcome::Timeout,
                    t0,
                    t0 + Duration::from_secs(5),
                );
            }
            log.write_interval(&r.snapshot(), t0 + Duration::from_secs(5 * round))
                .unwrap();
            intervals += 1;
        }
        // An interval with nothing new writes no histogram lines.
        log.write_interval(&r.snapshot(), t0 + Duration::from_secs(20))
            .unwrap();
        assert_eq!(intervals, 3);

        let text = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        let mut lines = 0;
        let mut base_time = false;
        for entry in IntervalLogIterator::new(&text) {
            match entry.expect("log parses") {
                LogEntry::BaseTime(_) => base_time = true,
                LogEntry::StartTime(_) => {}
                LogEntry::Interval(i) => {
                    lines += 1;
                    assert_eq!(i.duration(), Duration::from_secs(5));
                    let h = decode(i.encoded_histogram()).unwrap();
                    assert_eq!(i.max(), h.max() as f64, "max column in µs");
                    let tag = i.tag().expect("tagged").as_str().to_string();
                    *sums.entry(tag).or_default() += h.len();
                }
            }
        }
        assert!(base_time);
        assert_eq!(
            lines,
            3 * 3 + 1,
            "ca.issue/ok and publish ×2 per round, one timeout"
        );
        let s = r.snapshot();
        assert_eq!(sums["ca.issue/ok"], s.count(Phase::CaIssue, Outcome::Ok));
        assert_eq!(sums["ca.issue/ok"], 600);
        assert_eq!(sums["ca.issue/timeout"], 1);
        assert_eq!(sums["mqtt.publish/ok"], 600);
        assert_eq!(sums["mqtt.publish/ok/uncorrected"], 600);
    }
}

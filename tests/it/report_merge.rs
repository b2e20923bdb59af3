//! Reports of several shards merge exactly: the merged histograms equal those of one recorder that
//! saw every sample, and the counters add up; `fleetsim report` does the same from the files.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fleetsim::metrics::{Outcome, Phase, Recorder};
use fleetsim::report::{self, Report};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Feeds sample `i` to `r`: a spread of latencies over several phases and outcomes.
fn feed(r: &Recorder, i: u64, t0: Instant) {
    let us = |n: u64| Duration::from_micros(n);
    r.record(
        Phase::CaIssue,
        Outcome::Ok,
        t0,
        t0 + us(200 + i * 37 % 90_000),
    );
    if i.is_multiple_of(10) {
        r.record(Phase::CaIssue, Outcome::Throttled, t0, t0 + us(50 + i));
        r.error(Phase::CaIssue, "http_429");
    }
    // A publish that was due at t0 but began a little later.
    let began = t0 + us(i % 3_000);
    r.record_with_actual(
        Phase::MqttPublish,
        Outcome::Ok,
        t0,
        began,
        began + us(900 + i % 5_000),
    );
    r.message_sent();
    r.message_acked();
}

fn shard_report(r: &Recorder, planned: u64) -> Report {
    let mut report = Report::new(
        "merge-test",
        "embedded",
        "2026-11-28T10:00:00Z".into(),
        12.5,
        r.snapshot(),
    )
    .expect("report builds");
    report.devices.planned = planned;
    report.devices.connected = planned - 1;
    report.devices.failed = 1;
    // A one-interval timeline from the same snapshot, as a run ends.
    let mut sampler = report::timeline::Sampler::new(Instant::now(), Duration::from_secs(5));
    sampler.sample(&r.snapshot(), Instant::now());
    report.timeline = Some(sampler.finish());
    report
}

#[test]
fn three_shards_merge_to_exactly_one_recorder() {
    let t0 = Instant::now();
    let whole = Recorder::new();
    let shards = [Recorder::new(), Recorder::new(), Recorder::new()];
    for i in 0..30_000u64 {
        feed(&whole, i, t0);
        // Uneven split, so no shard looks like another.
        feed(&shards[(i * i % 7 % 3) as usize], i, t0);
    }
    let dir = temp_dir("merge");
    for (n, shard) in shards.iter().enumerate() {
        shard_report(shard, 10 + n as u64)
            .write_json(&dir.join(format!("shard-{n}.json")))
            .unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a report").unwrap();

    let merged = report::merge_files(std::slice::from_ref(&dir)).expect("merges");
    let (latency, uncorrected) = merged.histograms().unwrap();
    let expected = whole.snapshot();
    assert_eq!(latency, expected.latency, "corrected histograms are equal");
    assert_eq!(
        uncorrected, expected.uncorrected,
        "uncorrected histograms are equal"
    );
    assert_eq!(latency.len(), 3);
    assert_eq!(merged.merged_from.len(), 3, "{:?}", merged.merged_from);
    assert_eq!(merged.devices.planned, 10 + 11 + 12);
    assert_eq!(merged.devices.failed, 3);
    assert_eq!(merged.messages.sent, 30_000);
    assert_eq!(merged.messages.acked, 30_000);
    assert_eq!(merged.errors["ca.issue/http_429"], 3_000);
    assert_eq!(merged.scenario, "merge-test");
    // The summaries are those of the single recorder too.
    let single = Report::new("merge-test", "embedded", String::new(), 0.0, expected).unwrap();
    assert_eq!(merged.phases, single.phases);
    // The timelines merge too: the interval's histogram is the single recorder's.
    let point = &merged.timeline.as_ref().expect("merged timeline").points[0];
    let issue = &point.phases["ca.issue"];
    assert_eq!((issue.ok, issue.not_ok), (30_000, 3_000));
    let interval = report::stats::decode(issue.hdr.as_deref().unwrap()).unwrap();
    assert_eq!(interval, latency[&(Phase::CaIssue, Outcome::Ok)]);
    assert_eq!(point.messages_acked, 30_000);

    // The CLI: text on stdout, merged JSON written, readable again.
    let out_path = dir.join("merged.out");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .arg("report")
        .arg(dir.join("shard-0.json"))
        .arg(dir.join("shard-1.json"))
        .arg(dir.join("shard-2.json"))
        .arg("--out")
        .arg(&out_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("mqtt.publish") && stdout.contains("(uncorrected)"),
        "{stdout}"
    );
    let again = report::read_json(&out_path).expect("merged report reads back");
    assert_eq!(again.histograms().unwrap().0, latency);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn reports_of_another_schema_are_refused() {
    let dir = temp_dir("schema");
    let path = dir.join("old.json");
    std::fs::write(&path, r#"{"schema": "fleetsim.report/v0", "phases": []}"#).unwrap();
    let err = report::read_json(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        err.contains("fleetsim.report/v0") && err.contains("fleetsim.report/v1"),
        "{err}"
    );
}

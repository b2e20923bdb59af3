use super::*;
use crate::metrics::{DeviceState, Phase, Recorder, new_histogram};

fn near(value: Option<f64>, want: f64) {
    let v = value.unwrap_or_else(|| panic!("no value, expected {want}"));
    assert!(v >= want && v <= want * 1.001, "{v} is not {want} ± 0.1%");
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two intervals of known events: the points hold exactly what each interval added.
#[test]
fn points_hold_each_intervals_counts_and_states() {
    let r = Recorder::new();
    let t0 = Instant::now();
    let mut sampler = Sampler::new(t0, Duration::from_secs(5));

    // Interval 1: 3 devices start, 2 come online; 10 issues at 1..10 ms, one timeout.
    for _ in 0..3 {
        r.transition(None, DeviceState::Enrolling);
    }
    for _ in 0..2 {
        r.transition(Some(DeviceState::Enrolling), DeviceState::Online);
    }
    for i in 1..=10 {
        r.record(Phase::CaIssue, Outcome::Ok, t0, t0 + ms(i));
    }
    r.record(Phase::CaIssue, Outcome::Timeout, t0, t0 + ms(5_000));
    r.error(Phase::CaIssue, "timeout");
    for _ in 0..4 {
        r.message_sent();
    }
    r.message_acked();
    sampler.sample(&r.snapshot(), t0 + Duration::from_secs(5));

    // Interval 2: 100 more issues, all at 200 ms; one renewal fails; the third device goes online.
    r.transition(Some(DeviceState::Enrolling), DeviceState::Online);
    for _ in 0..100 {
        r.record(Phase::CaIssue, Outcome::Ok, t0, t0 + ms(200));
    }
    r.record(Phase::CaRenew, Outcome::Error, t0, t0 + ms(30));
    r.error(Phase::CaRenew, "http_500");
    r.message_sent();
    r.message_acked();
    r.message_failed();
    sampler.sample(&r.snapshot(), t0 + Duration::from_secs(10));
    // Nothing happened in the third: no phases, the same cumulative figures.
    sampler.sample(&r.snapshot(), t0 + Duration::from_millis(12_500));

    let timeline = sampler.finish();
    assert_eq!(timeline.interval_seconds, 5.0);
    let [a, b, c] = &timeline.points[..] else {
        panic!("three points: {timeline:?}");
    };
    assert_eq!((a.t, b.t, c.t), (5.0, 10.0, 12.5));

    assert_eq!(a.devices["enrolling"], 1);
    assert_eq!(a.devices["online"], 2);
    assert_eq!(b.devices["enrolling"], 0);
    assert_eq!(b.devices["online"], 3);
    assert_eq!(
        (a.messages_sent, a.messages_acked, a.messages_failed),
        (4, 1, 0)
    );
    assert_eq!(
        (b.messages_sent, b.messages_acked, b.messages_failed),
        (5, 2, 1)
    );
    assert_eq!((a.errors, b.errors, c.errors), (1, 2, 2));

    let issue = &a.phases["ca.issue"];
    assert_eq!((issue.ok, issue.not_ok), (10, 1));
    // The recorder keeps 3 significant figures: within 0.1% of 5 ms and 10 ms.
    near(issue.p50_ms, 5.0);
    near(issue.p99_ms, 10.0);
    assert!(!a.phases.contains_key("ca.renew"));

    // The second interval's percentiles are its own (200 ms), not the run's so far.
    let issue = &b.phases["ca.issue"];
    assert_eq!((issue.ok, issue.not_ok), (100, 0));
    near(issue.p50_ms, 200.0);
    near(issue.p99_ms, 200.0);
    let h = stats::decode(issue.hdr.as_deref().unwrap()).unwrap();
    assert_eq!(h.len(), 100);
    let renew = &b.phases["ca.renew"];
    assert_eq!((renew.ok, renew.not_ok), (0, 1));
    assert_eq!((renew.p50_ms, renew.hdr.as_deref()), (None, None));
    assert!(c.phases.is_empty());
    assert_eq!(c.devices, b.devices);

    // The intervals sum to the run's totals.
    let total: u64 = timeline
        .points
        .iter()
        .filter_map(|p| p.phases.get("ca.issue"))
        .map(|p| p.ok)
        .sum();
    assert_eq!(total, r.snapshot().count(Phase::CaIssue, Outcome::Ok));

    // And the JSON form reads back the same.
    let json = serde_json::to_string(&timeline).unwrap();
    assert_eq!(serde_json::from_str::<Timeline>(&json).unwrap(), timeline);
}

/// A shard's timeline: `n` intervals, interval i has `i + 1` ok issues at `base` ms.
fn shard(n: usize, base: u64, online: i64) -> (Timeline, Vec<Histogram>) {
    let r = Recorder::new();
    let t0 = Instant::now();
    let mut sampler = Sampler::new(t0, Duration::from_secs(5));
    let mut intervals = Vec::new();
    for i in 0..n {
        let mut h = new_histogram();
        for k in 0..=i as u64 {
            let v = base + k * 7 + i as u64;
            r.record(Phase::CaIssue, Outcome::Ok, t0, t0 + ms(v));
            h.record(v * 1000).unwrap();
        }
        r.record(Phase::MqttConnect, Outcome::Rejected, t0, t0 + ms(1));
        r.message_sent();
        if i == 0 {
            for _ in 0..online {
                r.transition(None, DeviceState::Online);
            }
        }
        intervals.push(h);
        sampler.sample(&r.snapshot(), t0 + Duration::from_secs(5 * (i as u64 + 1)));
    }
    (sampler.finish(), intervals)
}

type Histogram = hdrhistogram::Histogram<u64>;

#[test]
fn shard_timelines_merge_by_interval_exactly() {
    let (a, ha) = shard(3, 10, 4);
    let (b, hb) = shard(2, 300, 6);
    let merged = merge(&[&a, &b]).unwrap().expect("same interval");
    assert_eq!(merged.interval_seconds, 5.0);
    assert_eq!(merged.points.len(), 3);
    for (i, p) in merged.points.iter().enumerate() {
        let issue = &p.phases["ca.issue"];
        // Interval histograms add, so the percentiles are those of every sample of the interval.
        let mut expected = ha[i].clone();
        if let Some(h) = hb.get(i) {
            expected.add(h).unwrap();
        }
        assert_eq!(issue.ok, expected.len(), "interval {i}");
        assert_eq!(
            issue.p50_ms,
            Some(expected.value_at_quantile(0.5) as f64 / 1000.0)
        );
        assert_eq!(
            issue.p99_ms,
            Some(expected.value_at_quantile(0.99) as f64 / 1000.0)
        );
        assert_eq!(
            stats::decode(issue.hdr.as_deref().unwrap()).unwrap(),
            expected
        );
        assert_eq!(p.phases["mqtt.connect"].not_ok, if i < 2 { 2 } else { 1 });
        // States add; shard b had ended by the third interval and keeps its last figures.
        assert_eq!(p.devices["online"], 10);
        let sent = (i as u64 + 1) + (i as u64 + 1).min(2);
        assert_eq!(p.messages_sent, sent, "interval {i}");
        assert_eq!(p.t, 5.0 * (i as f64 + 1.0));
    }
    // The p99 of the first interval is shard b's tail, which neither shard's p50 would give.
    near(merged.points[0].phases["ca.issue"].p99_ms, 300.0);

    // Timelines that cannot be aligned (not a power-of-two multiple) are left out, not misdrawn.
    let mut other = b.clone();
    other.interval_seconds = 7.0;
    assert_eq!(merge(&[&a, &other]).unwrap(), None);
    assert_eq!(merge(&[&a, &Timeline::default()]).unwrap(), None);
}

/// A run far longer than MAX_POINTS intervals keeps a bounded timeline whose points still sum
/// to the totals, with exact percentiles per joined interval.
#[test]
fn long_runs_coarsen_the_timeline_and_keep_the_totals() {
    let r = Recorder::new();
    let t0 = Instant::now();
    let mut sampler = Sampler::new(t0, Duration::from_secs(5));
    let n = MAX_POINTS * 2 + 100;
    for i in 0..n {
        // Interval i: one issue at (i % 50 + 1) ms, a timeout every 10th interval.
        r.record(Phase::CaIssue, Outcome::Ok, t0, t0 + ms(i as u64 % 50 + 1));
        if i % 10 == 0 {
            r.record(Phase::CaIssue, Outcome::Timeout, t0, t0 + ms(5_000));
        }
        r.message_sent();
        sampler.sample(&r.snapshot(), t0 + Duration::from_secs(5 * (i as u64 + 1)));
    }
    let timeline = sampler.finish();
    assert!(
        timeline.points.len() <= MAX_POINTS,
        "{}",
        timeline.points.len()
    );
    assert!(timeline.points.len() >= MAX_POINTS / 2);
    assert_eq!(timeline.interval_seconds, 20.0, "coarsened twice");
    let ok: u64 = timeline
        .points
        .iter()
        .map(|p| p.phases["ca.issue"].ok)
        .sum();
    let not_ok: u64 = timeline
        .points
        .iter()
        .map(|p| p.phases["ca.issue"].not_ok)
        .sum();
    assert_eq!(ok, n as u64);
    assert_eq!(not_ok, n.div_ceil(10) as u64);
    let last = timeline.points.last().unwrap();
    assert_eq!(last.t, 5.0 * n as f64);
    assert_eq!(last.messages_sent, n as u64);
    // A joined point covers 4 intervals: ok issues at 1..=4 ms, so p99 is the 4th.
    let first = &timeline.points[0].phases["ca.issue"];
    assert_eq!(first.ok, 4);
    near(first.p99_ms, 4.0);
    assert_eq!(timeline.points[0].t, 20.0);

    // A shard that coarsened fewer times merges after being brought to the same interval.
    let (short, _) = shard(3, 10, 4);
    let merged = merge(&[&timeline, &short]).unwrap().expect("alignable");
    assert_eq!(merged.interval_seconds, 20.0);
    assert_eq!(merged.points[0].phases["ca.issue"].ok, 4 + (1 + 2 + 3));
}

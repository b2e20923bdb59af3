use super::*;
use std::sync::Arc;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn records_from_intended_start_and_counts_errors() {
    let r = Recorder::new();
    let t0 = Instant::now();
    for n in 1..=1000u64 {
        r.record(Phase::MqttPublish, Outcome::Ok, t0, t0 + ms(n));
    }
    r.error(Phase::CaIssue, "http_500");
    r.error(Phase::CaIssue, "http_500");
    let s = r.snapshot();
    let h = &s.latency[&(Phase::MqttPublish, Outcome::Ok)];
    assert_eq!(h.len(), 1000);
    let p50 = h.value_at_quantile(0.5);
    assert!(p50.abs_diff(500_000) <= 500, "p50 {p50} µs");
    assert_eq!(s.latency.len(), 1, "empty slots are left out");
    assert!(
        s.uncorrected.is_empty(),
        "record() keeps no uncorrected figure"
    );
    assert_eq!(s.errors["ca.issue/http_500"], 2);
    assert_eq!(s.count(Phase::MqttPublish, Outcome::Ok), 1000);
}

/// One sender, a message due every 10 ms, each taking 1 ms, except message 5000 which stalls for
/// 1 s. The messages that fell due during the stall go out back to back once it ends, each 1 ms,
/// until the sender has caught up. From their due time, message k after the stall took
/// `1000 + k - 10k = 1000 - 9k` ms (k = 1..110 are above 1 ms; k = 111 is back to 1 ms).
///
/// Of the 10,000 latencies, 9,889 are 1 ms and 111 are 10, 19, ..., 991, 1000 ms, so the
/// corrected p99 (the 9,900th value) is the 11th of those: 10 + 9 × 10 = 100 ms, p99.9 (the
/// 9,990th) the 101st: 910 ms. Measured from when each send actually began, every message but
/// the stalled one took 1 ms: the uncorrected p99.9 is 1 ms, hiding the stall.
#[test]
fn a_stall_shows_in_corrected_percentiles_and_not_in_uncorrected_ones() {
    let r = Recorder::with_shards(2);
    let t0 = Instant::now();
    let mut previous_end = Duration::ZERO;
    for i in 0..10_000u64 {
        let due = ms(10 * i);
        let start = due.max(previous_end);
        let end = start + if i == 5000 { ms(1000) } else { ms(1) };
        r.record_with_actual(
            Phase::MqttPublish,
            Outcome::Ok,
            t0 + due,
            t0 + start,
            t0 + end,
        );
        previous_end = end;
    }
    let s = r.snapshot();
    let key = (Phase::MqttPublish, Outcome::Ok);
    let corrected = &s.latency[&key];
    let uncorrected = &s.uncorrected[&key];
    assert_eq!((corrected.len(), uncorrected.len()), (10_000, 10_000));

    // Within the histogram's 3 significant figures of the analytic values (in µs).
    let near = |got: u64, want_ms: u64| {
        let want = want_ms * 1000;
        assert!(
            got.abs_diff(want) * 1000 <= want,
            "got {got} µs, want {want} µs"
        );
    };
    near(corrected.value_at_quantile(0.50), 1);
    near(corrected.value_at_quantile(0.90), 1);
    near(corrected.value_at_quantile(0.99), 100);
    near(corrected.value_at_quantile(0.999), 910);
    near(corrected.max(), 1000);
    // Sum of the latencies: 9,889 × 1 + 1000 + Σ_{k=1..110} (1000 − 9k) = 65,944 ms.
    assert!(
        (corrected.mean() - 6_594.4).abs() < 10.0,
        "{}",
        corrected.mean()
    );

    near(uncorrected.value_at_quantile(0.99), 1);
    near(uncorrected.value_at_quantile(0.999), 1);
    near(uncorrected.max(), 1000);
    assert!(
        (uncorrected.mean() - 1_099.9).abs() < 2.0,
        "{}",
        uncorrected.mean()
    );
}

#[test]
fn concurrent_writers_on_shared_shards_lose_nothing() {
    // Fewer shards than threads, so some threads share one.
    let r = Arc::new(Recorder::with_shards(3));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..5_000u64 {
                    r.record(Phase::CaIssue, Outcome::Ok, t0, t0 + ms(1 + (i + t) % 50));
                    if i.is_multiple_of(100) {
                        r.error(Phase::CaIssue, "http_503");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = r.snapshot();
    assert_eq!(s.count(Phase::CaIssue, Outcome::Ok), 30_000);
    assert_eq!(s.errors["ca.issue/http_503"], 300);
}

#[test]
fn latencies_outside_the_range_are_clamped() {
    let r = Recorder::with_shards(1);
    let t0 = Instant::now();
    r.record(Phase::Keygen, Outcome::Ok, t0, t0);
    r.record(Phase::Keygen, Outcome::Ok, t0 + ms(5), t0);
    r.record(
        Phase::Keygen,
        Outcome::Ok,
        t0,
        t0 + Duration::from_secs(7200),
    );
    let h = &r.snapshot().latency[&(Phase::Keygen, Outcome::Ok)];
    assert_eq!(h.len(), 3);
    assert_eq!(h.min(), LOWEST_US);
    assert!(h.equivalent(h.max(), HIGHEST_US));
}

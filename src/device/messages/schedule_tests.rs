use super::*;
use crate::scenario::draw::mean_and_deviation;

fn spec(yaml: &str) -> Schedule {
    serde_saphyr::from_str(yaml).unwrap()
}

/// The gaps between `n` successive due times, in seconds, with the wall clock standing still
/// relative to `now` (as it does, for schedules that do not read it).
fn gaps(s: &mut MessageSchedule, n: usize) -> Vec<f64> {
    let now = Instant::now();
    let wall = Duration::from_secs(1_000_000);
    let mut last = s.first(now, wall);
    (0..n)
        .map(|_| {
            let due = s.next(now, wall);
            let gap = due.duration_since(last).as_secs_f64();
            last = due;
            gap
        })
        .collect()
}

#[test]
fn a_fixed_interval_never_drifts() {
    let mut s = MessageSchedule::new(spec("{every: 250ms}"), 1);
    let now = Instant::now();
    let first = s.first(now, Duration::from_secs(5));
    assert_eq!(
        first, now,
        "the first message is due when the device is online"
    );
    for k in 1..=1000u32 {
        assert_eq!(
            s.next(now, Duration::from_secs(5)),
            now + Duration::from_millis(250) * k
        );
    }
}

#[test]
fn jittered_gaps_stay_within_the_jitter_and_average_the_interval() {
    let mut s = MessageSchedule::new(spec("{every: 10s, jitter: 20%}"), 2);
    let g = gaps(&mut s, 20_000);
    assert!(
        g.iter().all(|&x| (8.0..=12.0).contains(&x)),
        "a gap outside 10 s ± 2 s"
    );
    let (mean, dev) = mean_and_deviation(&g);
    assert!((mean - 10.0).abs() < 0.03, "mean gap {mean}");
    // Uniform over ±2 s: deviation 4 / √12 ≈ 1.155 s.
    assert!((dev - 4.0 / 12f64.sqrt()).abs() < 0.03, "deviation {dev}");
}

#[test]
fn poisson_gaps_are_exponential() {
    let mut s = MessageSchedule::new(spec("{poisson: 2/s}"), 3);
    let g = gaps(&mut s, 50_000);
    let (mean, dev) = mean_and_deviation(&g);
    assert!((mean - 0.5).abs() < 0.01, "mean gap {mean}");
    assert!(
        (dev - 0.5).abs() < 0.015,
        "an exponential's deviation equals its mean: {dev}"
    );
    // P(gap > mean) = e^-1.
    let over = g.iter().filter(|&&x| x > 0.5).count() as f64 / g.len() as f64;
    assert!((over - (-1f64).exp()).abs() < 0.01, "{over}");
    // Coming online is not an event: the first message too waits an exponential gap.
    let now = Instant::now();
    let firsts: Vec<f64> = (0..20_000)
        .map(|seed| {
            let mut s = MessageSchedule::new(spec("{poisson: 2/s}"), seed);
            s.first(now, Duration::ZERO)
                .duration_since(now)
                .as_secs_f64()
        })
        .collect();
    let (mean, _) = mean_and_deviation(&firsts);
    assert!((mean - 0.5).abs() < 0.015, "first gap {mean}");
}

#[test]
fn bursts_send_count_messages_spacing_apart() {
    let mut s = MessageSchedule::new(spec("{every: 10m, count: 20, spacing: 100ms}"), 4);
    let g = gaps(&mut s, 59);
    for (i, gap) in g.iter().enumerate() {
        let expected = match i {
            19 | 39 => 600.0 - 1.9,
            _ => 0.1,
        };
        assert!((gap - expected).abs() < 1e-6, "gap {i}: {gap}");
    }
}

#[test]
fn aligned_ticks_make_the_herd() {
    // 1,000 devices coming online at random moments of a minute and a half: every message of
    // every device is due within the second after a whole minute (or half minute) on the wall
    // clock, whenever the device came online.
    let spec = spec("{every: 30s, align: 1m, jitter: 800ms}");
    let now = Instant::now();
    let base = Duration::from_secs(1_764_513_000); // a whole minute, Unix time
    let mut rng = SmallRng::seed_from_u64(9);
    let mut firsts = std::collections::BTreeSet::new();
    for device in 0..1000u64 {
        let online_after = Duration::from_secs_f64(draw::uniform(&mut rng, 0.0, 90.0));
        let (now_d, wall_d) = (now + online_after, base + online_after);
        let mut s = MessageSchedule::new(spec, device);
        let first = s.first(now_d, wall_d);
        let mut due = vec![first];
        due.extend((0..5).map(|_| s.next(now_d, wall_d)));
        for d in due {
            // Back to the wall clock.
            let wall = base + d.duration_since(now);
            let into_half_minute = wall.as_secs_f64() % 30.0;
            assert!(
                into_half_minute < 1.0,
                "device {device}: due {into_half_minute:.3} s after the tick"
            );
        }
        let first_wall = (base + first.duration_since(now)).as_secs();
        assert_eq!(
            first_wall % 60,
            0,
            "the first message waits for the whole minute"
        );
        assert!(first >= now_d, "never due before the device is online");
        firsts.insert(first_wall);
    }
    // Devices online in the first minute share one first tick; the rest the next one.
    assert_eq!(firsts.len(), 2, "{firsts:?}");
}

#[test]
fn the_interval_can_change_while_the_device_runs() {
    let mut s = MessageSchedule::new(spec("{every: 10s}"), 5);
    let now = Instant::now();
    let wall = Duration::from_secs(100);
    assert_eq!(s.first(now, wall), now);
    let due = s.next(now, wall);
    assert_eq!(due, now + Duration::from_secs(10));
    let due = s.set_interval(Duration::from_secs(2), now, wall, due);
    assert_eq!(
        due,
        now + Duration::from_secs(2),
        "the pending message moves"
    );
    assert_eq!(s.interval(), Duration::from_secs(2));
    assert_eq!(s.next(now, wall), now + Duration::from_secs(4));

    let mut p = MessageSchedule::new(spec("{poisson: 1/s}"), 6);
    p.set_interval(Duration::from_millis(100), now, wall, now);
    let (mean, _) = mean_and_deviation(&gaps(&mut p, 20_000));
    assert!((mean - 0.1).abs() < 0.003, "the new mean interval: {mean}");
}

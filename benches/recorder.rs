//! How fast the recorder takes events, and whether it becomes a shared lock under parallel writers.
//!
//! Each benchmark records latencies into the hottest slot of a run (`mqtt.publish/ok`), the slot
//! every telemetry message of every device lands in. Throughput is reported in events (one
//! `record` call each), so the figures read directly as events/s. The sharded recorder
//! (`Recorder::new`) runs side by side with the same recorder forced onto a single shard
//! (`Recorder::with_shards(1)`: one mutex for everyone), which is the design the shards replace.
//!
//! Run: `cargo bench --bench recorder` (results in BENCHMARKS.md, section "Recorder").

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetsim::metrics::{Outcome, Phase, Recorder};

/// Latencies cycle over a realistic spread (0.2 ms .. ~50 ms), so the histogram's bucket lookup
/// is not always the same cache line.
fn latency(i: u64) -> Duration {
    Duration::from_micros(200 + (i * 7919) % 50_000)
}

/// `n` events on the calling thread.
fn record_n(recorder: &Recorder, n: u64) {
    let end = Instant::now();
    for i in 0..n {
        let start = end - latency(i);
        recorder.record(Phase::MqttPublish, Outcome::Ok, black_box(start), end);
    }
}

/// `threads` OS threads record `per_thread` events each, all at once; the wall time.
fn record_parallel(recorder: &Recorder, threads: usize, per_thread: u64) -> Duration {
    let barrier = std::sync::Barrier::new(threads + 1);
    // The scope joins every writer before it returns, so the clock runs until the last is done.
    let started = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                record_n(recorder, per_thread);
            });
        }
        barrier.wait();
        Instant::now()
    });
    started.elapsed()
}

fn threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("recorder");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));

    let sharded = Recorder::new();
    group.bench_function("1 thread, sharded", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            record_n(&sharded, iters);
            t.elapsed()
        })
    });
    let single = Recorder::with_shards(1);
    group.bench_function("1 thread, one lock", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            record_n(&single, iters);
            t.elapsed()
        })
    });

    // Two writers: one iteration is one event on each, so Elements(2).
    group.throughput(Throughput::Elements(2));
    let sharded = Recorder::new();
    group.bench_function("2 threads, sharded", |b| {
        b.iter_custom(|iters| record_parallel(&sharded, 2, iters))
    });
    let single = Recorder::with_shards(1);
    group.bench_function("2 threads, one lock", |b| {
        b.iter_custom(|iters| record_parallel(&single, 2, iters))
    });
    group.finish();
}

/// The way a run records: many tokio tasks (devices) on a 2-worker runtime.
fn tasks(c: &mut Criterion) {
    const TASKS: u64 = 1_000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut group = c.benchmark_group("recorder");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    // One iteration: one event in each of TASKS tasks.
    group.throughput(Throughput::Elements(TASKS));
    for (name, shards) in [
        ("1000 tasks, sharded", None),
        ("1000 tasks, one lock", Some(1)),
    ] {
        let recorder = Arc::new(match shards {
            Some(n) => Recorder::with_shards(n),
            None => Recorder::new(),
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let t = Instant::now();
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..TASKS {
                        let recorder = recorder.clone();
                        set.spawn(async move {
                            // Devices record between awaits; yield now and then so the tasks
                            // interleave on both workers as they do in a run.
                            for chunk in 0..iters.div_ceil(64) {
                                record_n(&recorder, 64.min(iters - chunk * 64));
                                tokio::task::yield_now().await;
                            }
                        });
                    }
                    set.join_all().await;
                    t.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, threads, tasks);
criterion_main!(benches);

//! What one telemetry message costs to build: payload, topic with its property bag, IoT Hub's
//! size and meters (`MessageBuilder::build`, what a device does per message before publishing).
//!
//! `cargo bench --bench telemetry`. Cases:
//! - `build/sample`: the default, EZCA's sample (`deviceId`, `messageId`, two uniform draws, the
//!   `temperatureAlert` property), ~100 bytes;
//! - `build/template-1kb`: `benches/payload-1kb.yaml`, ~1 KB with 25 generated values (walks,
//!   normals, choices, a `$repeat`, `$text`, a UUID message id, timestamps);
//! - `build/gateway-16kb`: the gateways of `scenarios/realistic-fleet.yaml`, a `$repeat` of 220
//!   readings (~16 KB);
//! - `build/raw-4kb` and `build/raw-lognormal`: raw bytes, 4 KB, and p50 1 KB / p99 16 KB.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetsim::device::messages::{MessageBuilder, TelemetryPlan};
use fleetsim::scenario::{Scenario, parse};

const HEAD: &str = "name: bench\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\n";

/// A scenario whose `telemetry` section is `keys` (YAML, unindented).
fn with_telemetry(keys: &str) -> Scenario {
    let body: String = keys.lines().map(|l| format!("  {l}\n")).collect();
    parse(
        &format!("{HEAD}telemetry:\n{body}"),
        Path::new("bench.yaml"),
    )
    .expect("bench scenario")
}

fn plans() -> Vec<(&'static str, Arc<TelemetryPlan>)> {
    let plan = |s: &Scenario, i: usize| {
        let settings = s.telemetry_settings().swap_remove(i);
        Arc::new(TelemetryPlan::new(settings, "bench"))
    };
    let realistic =
        fleetsim::scenario::load(Path::new("scenarios/realistic-fleet.yaml")).expect("scenario");
    vec![
        ("sample", plan(&with_telemetry("interval: 1s"), 0)),
        (
            "template-1kb",
            plan(&with_telemetry(include_str!("payload-1kb.yaml")), 0),
        ),
        ("gateway-16kb", plan(&realistic, 2)),
        ("raw-4kb", plan(&with_telemetry("payload: {size: 4KB}"), 0)),
        (
            "raw-lognormal",
            plan(
                &with_telemetry("payload: {size: {dist: lognormal, p50: 1KB, p99: 16KB}}"),
                0,
            ),
        ),
    ]
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.throughput(Throughput::Elements(1));
    let now_ms = 1_764_513_000_000i64;
    for (name, plan) in plans() {
        let id = "e2e-000123";
        let mut builder = MessageBuilder::new(plan, id, 42);
        group.bench_function(name, |b| {
            b.iter(|| black_box(builder.build(black_box(id), 123, now_ms)))
        });
    }
    group.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);

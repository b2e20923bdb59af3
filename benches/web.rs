//! What one update of the live web page costs (`fleetsim run --web`): the frame a tick builds
//! (the recorder's snapshot, a timeline point, live thresholds, the state array, the expiry
//! distribution) and its JSON, at 10,000 devices, against the same with 1,000 devices, to show
//! which part grows with the fleet. Also the bytes each watcher is sent per update.
//!
//! Run: `cargo bench --bench web` (results in BENCHMARKS.md, section "Live web view").

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use fleetsim::metrics::board::DeviceBoard;
use fleetsim::metrics::{DeviceState, Outcome, Phase, Recorder};
use fleetsim::web::{LiveRun, Ticker};

/// A recorder and board as a run of `devices` has them once everyone is online: every device's
/// phases recorded, states and certificates set on the board.
fn ticker(devices: u64) -> Ticker {
    let recorder = Arc::new(Recorder::new());
    let ids: Vec<(u64, String, usize)> = (0..devices)
        .map(|i| (i, format!("dev-{i:05}"), (i % 2) as usize))
        .collect();
    let board = Arc::new(DeviceBoard::new(&["a".into(), "b".into()], &ids));
    recorder.set_board(board.clone());
    let end = Instant::now();
    for i in 0..devices {
        let start = end - Duration::from_micros(500 + (i * 7919) % 50_000);
        for phase in [
            Phase::CaIssue,
            Phase::HubRegister,
            Phase::MqttConnect,
            Phase::MqttPublish,
        ] {
            recorder.record(phase, Outcome::Ok, start, end);
        }
        recorder.transition(None, DeviceState::Online);
        board.set_state(i, DeviceState::Online);
        board.set_expiry(i, SystemTime::now() + Duration::from_secs(86_400 + i));
    }
    let run = LiveRun {
        title: "bench".into(),
        duration: Duration::from_secs(600),
        recorder,
        board,
        thresholds: vec![
            "ca.issue p99 < 1s".parse().unwrap(),
            "errors rate < 1%".parse().unwrap(),
        ],
        verdict: Default::default(),
    };
    Ticker::new(run, Instant::now(), Duration::from_secs(1))
}

fn frame_cost(c: &mut Criterion) {
    for devices in [1_000u64, 10_000] {
        let mut t = ticker(devices);
        let bytes = serde_json::to_string(&t.tick()).unwrap().len();
        println!("web frame at {devices} devices: {bytes} bytes of JSON per update");
        c.bench_function(&format!("web frame, {devices} devices"), |b| {
            b.iter(|| black_box(serde_json::to_string(&t.tick()).unwrap()))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = frame_cost
}
criterion_main!(benches);

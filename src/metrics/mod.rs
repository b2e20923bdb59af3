//! What a run measures: HDR latency histograms per phase × outcome, counters, device-state gauges.
//!
//! Latencies are recorded in microseconds from the operation's *intended* start (for telemetry,
//! the tick it was due), so a stalled device shows up as latency rather than as missing samples
//! (coordinated-omission correction). Phases recorded with an actual start as well (today
//! `mqtt.publish`) also keep an *uncorrected* histogram (actual start → end), so a report can show
//! how much of the latency was waiting for a late send.
//!
//! Every histogram covers **1 µs to 1 h** (values outside are clamped to the bounds) at **3
//! significant figures** (a recorded value is within 0.1% of the true one). One set per process
//! shard of the recorder, never per device: see [`Recorder`] for how writers avoid a shared lock.
//!
//! [`exporter`] serves all of it to Prometheus at `/metrics`.

pub mod certs;
pub mod exporter;
mod recorder;
mod vocabulary;

pub use recorder::{HIGHEST_US, LOWEST_US, Recorder, SIGFIG, Snapshot, new_histogram};
pub use vocabulary::{DeviceState, Outcome, Phase};

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
//! [`exporter`] serves all of it to Prometheus at `/metrics`. [`delivery`] is the ledger of a
//! run with a backend: which acknowledged telemetry the backend read, lost or read twice.

pub mod auth_gauge;
pub mod board;
pub mod certs;
pub mod delivery;
pub mod exporter;
pub mod qos1;
mod recorder;
mod vocabulary;

pub use recorder::{HIGHEST_US, LOWEST_US, Recorder, SIGFIG, Snapshot, new_histogram};
pub use vocabulary::{DeviceState, Outcome, Phase};

/// A byte count as people read it (`812 B`, `12.3 KiB`, `4.5 MiB`, `1.2 GiB`): how the byte
/// counters read in every view of them (report, live view, progress lines, `plan-shards`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod bytes_tests {
    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(super::human_bytes(812), "812 B");
        assert_eq!(super::human_bytes(12_595), "12.3 KiB");
        assert_eq!(super::human_bytes(4_718_592), "4.5 MiB");
        assert_eq!(super::human_bytes(1_288_490_189), "1.2 GiB");
    }
}

//! A test hook that makes a task panic at a named point, so tests can check that a panic is
//! caught where it happens, counted and fails the run (issue #18). It is off unless the
//! environment variable `FLEETSIM_TEST_PANIC` lists the point (comma-separated):
//!
//! - `device`: each device task, as it starts enrolling;
//! - `arrivals`: an arrival process, after it has let its first device in;
//! - `emulator.ca`: the CA emulator's handler of `RequestSSLCertificate`;
//! - `emulator.dps`: each connection to the DPS emulator's device endpoint;
//! - `emulator.amqp`: each connection to the hub's AMQP endpoint.
//!
//! It is for tests only: nothing in a normal run sets it. [`panic_message`] reads what a caught
//! panic said.

use std::sync::OnceLock;

/// The variable that lists the points.
pub const VARIABLE: &str = "FLEETSIM_TEST_PANIC";

/// Panics if `point` is listed in [`VARIABLE`] (read once per process).
pub fn panic_at(point: &str) {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var(VARIABLE)
            .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default()
    });
    if points.iter().any(|p| p == point) {
        panic!("injected panic at {point} ({VARIABLE})");
    }
}

/// The message a panic carried (its payload is a `&str` or a `String` for `panic!`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

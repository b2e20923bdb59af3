//! fleetsim: a fleet simulator and load generator for certificate-authenticated IoT fleets.
//!
//! A scenario ([`scenario`]) describes a fleet; the scheduler ([`fleet`]) starts its devices at
//! the arrival rate; each device ([`device`]) generates a key, is issued a certificate by EZCA
//! ([`ezca`]), is registered in IoT Hub and connects over MQTT/TLS with it ([`iothub`]), sends
//! telemetry and renews its certificate before it expires. Every step is timed into HDR
//! histograms ([`metrics`]) and summarised in a report ([`report`]).
//!
//! By default the run targets embedded emulators of EZCA and IoT Hub ([`emulator`]) on loopback;
//! pointing the scenario at the real services uses the same clients.
//!
//! Layout (see `DESIGN.md` in the shared docs for the full map):
//! `scenario` → `fleet` → `device` (through the traits in [`device`]) → `ezca`/`iothub` clients;
//! `emulator` is the other side of the wire; `crypto`, `amqp` and `clock` are shared leaves.

pub mod amqp;
pub mod cleanup;
pub mod cli;
pub mod clock;
pub mod crypto;
pub mod device;
pub mod distributed;
pub mod emulator;
pub mod ezca;
pub mod fleet;
pub mod inject;
pub mod iothub;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod rlimit;
pub mod scenario;
pub mod state;
pub mod sync;
pub mod ui;
pub mod web;

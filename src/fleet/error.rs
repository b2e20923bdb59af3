//! What stops a run: a target that cannot be set up, a shard that does not fit, a report that
//! cannot be written. A leaf: the other files of `fleet` import it, it imports none of them but
//! `shard`.

use super::shard::ShardError;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("emulators: {0}")]
    Emulator(#[from] crate::emulator::EmulatorError),
    #[error("EZCA: {0}")]
    Ezca(#[from] crate::ezca::EzcaError),
    #[error("IoT Hub: {0}")]
    Hub(#[from] crate::iothub::HubError),
    #[error("{0}")]
    Setup(String),
    #[error("report: {0}")]
    Report(#[from] crate::report::ReportError),
    #[error("{0}")]
    Shard(#[from] ShardError),
}

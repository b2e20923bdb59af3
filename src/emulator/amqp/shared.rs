//! What every connection of the AMQP endpoint shares: who the hub is, the policies it trusts,
//! where C2D messages go and the event log the Event Hub-compatible endpoint reads. Its own file
//! so the connection and link handlers import it one way.

use std::sync::Arc;

use super::c2d::C2dSink;
use super::cbs::AccessPolicy;
use super::eventlog::EventLog;

/// What every connection of the endpoint shares.
pub struct Shared {
    pub host: String,
    pub entity: String,
    pub policies: Vec<AccessPolicy>,
    pub c2d: Arc<dyn C2dSink>,
    pub events: Arc<EventLog>,
    /// What the endpoint's accept loop saw (handshakes, accept errors, panicking connections).
    pub listeners: Arc<crate::emulator::listener::ListenerCounters>,
}

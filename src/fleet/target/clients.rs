//! What the embedded and remote targets both build: the clients a fleet's devices and operator
//! use, before they join the shared services.

use std::time::Duration;

use crate::device::adapters::{EzcaCa, HubRegistry};
use crate::device::dps::DpsProvisioning;
use crate::iothub::ConnectionString;
use crate::iothub::amqp::Endpoint as AmqpEndpoint;
use crate::iothub::mqtt::{MqttEndpoint, MqttTransport};
use crate::iothub::service::ServiceClient;

/// How long an AMQP connection and each of its requests may take.
pub(super) const AMQP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the operator sends cloud-to-device messages: the hub's AMQP endpoint and a service
/// policy's credentials.
#[derive(Clone)]
pub struct C2dTarget {
    pub endpoint: AmqpEndpoint,
    pub credentials: ConnectionString,
}

/// The clients of the target, before they join the services the devices share: the registry
/// or DPS, as the scenario provisions, and the hub's service API when fleetsim can reach it.
pub(super) struct Clients {
    pub(super) ca: EzcaCa,
    pub(super) registry: Option<HubRegistry>,
    pub(super) provisioning: Option<DpsProvisioning>,
    pub(super) transport: MqttTransport,
    /// None in a remote DPS run without operator events (it may have no hub credentials).
    pub(super) service: Option<ServiceClient>,
    pub(super) c2d: Option<C2dTarget>,
}

pub(super) fn endpoint(host: String, port: u16, hub_host: String, websocket: bool) -> MqttEndpoint {
    MqttEndpoint {
        websocket,
        host,
        port,
        hub_host,
        keep_alive: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(30),
        ack_timeout: Duration::from_secs(10),
    }
}

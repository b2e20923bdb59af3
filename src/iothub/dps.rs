//! The device side of the Device Provisioning Service (reference §6): a device connects to DPS
//! over MQTT/TLS with its certificate chain, subscribes to `$dps/registrations/res/#`, sends
//! `iotdps-register`, polls `iotdps-get-operationstatus` honouring `retry-after` as Microsoft's
//! SDKs do, and learns which hub it was assigned to. The same code talks to Azure (the global
//! endpoint `global.azure-devices-provisioning.net:8883` and the service's id scope) and to the
//! embedded emulator.
//!
//! One [`DpsClient`] serves every device; [`DpsClient::register`] is one device's whole
//! registration on its own short-lived connection. Waits between requests can be scaled or fixed
//! ([`Polling`]) for compressed runs.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;

use super::tls::{DeviceTls, MqttDial, connack_code};
use answer::{Next, Progress, Request, parse_response};

mod answer;
mod types;

pub use types::{Assignment, Polling, ProvisioningError};

/// DPS's public device endpoint in Azure.
pub const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";
/// The api-version Microsoft's C# and Python SDKs put in the username.
pub const API_VERSION: &str = "2019-03-31";
const RESPONSE_FILTER: &str = "$dps/registrations/res/#";

/// Where DPS is and how long to give it.
#[derive(Debug, Clone)]
pub struct DpsEndpoint {
    /// [`GLOBAL_ENDPOINT`] in Azure; a DNS name or an IP literal, also the TLS server name.
    pub host: String,
    pub port: u16,
    pub id_scope: String,
    /// MQTT over WebSocket (`wss://host:port/$iothub/websocket`) instead of MQTT on TLS.
    pub websocket: bool,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    /// The whole registration, connect to assignment (the Python SDK gives up after 30 s).
    pub timeout: Duration,
    pub polling: Polling,
}

impl DpsEndpoint {
    /// Azure's global endpoint on 8883 for `id_scope`, with the SDKs' timings.
    pub fn azure(id_scope: &str) -> Self {
        Self {
            host: GLOBAL_ENDPOINT.into(),
            port: 8883,
            id_scope: id_scope.into(),
            websocket: false,
            keep_alive: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            polling: Polling::default(),
        }
    }
}

/// One device's registration: the outcome, and how many polls and 429s it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub outcome: Result<Assignment, ProvisioningError>,
    /// Operation-status requests sent.
    pub polls: u32,
    /// Requests DPS answered 429.
    pub throttled: u32,
}

/// The device side of DPS, shared by all devices (one trust store, one crypto provider).
pub struct DpsClient {
    endpoint: DpsEndpoint,
    tls: DeviceTls,
}

impl DpsClient {
    pub fn new(endpoint: DpsEndpoint, roots: RootCertStore) -> Self {
        Self {
            endpoint,
            tls: DeviceTls::new(roots),
        }
    }

    pub fn endpoint(&self) -> &DpsEndpoint {
        &self.endpoint
    }

    /// The username DPS expects: `{idScope}/registrations/{registrationId}/api-version=…`, no `?`.
    pub fn username(id_scope: &str, registration_id: &str) -> String {
        format!(
            "{id_scope}/registrations/{registration_id}/api-version={API_VERSION}&ClientVersion=fleetsim%2F{}",
            env!("CARGO_PKG_VERSION")
        )
    }

    /// Registers `registration_id` (its certificate's CN), presenting `chain` (leaf first) and
    /// proving possession of `key`; `payload` goes to DPS as the request's custom data.
    pub async fn register(
        &self,
        registration_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        payload: Option<serde_json::Value>,
    ) -> Registration {
        let mut progress = Progress::default();
        let run = self.run(registration_id, chain, key, payload, &mut progress);
        let outcome = match tokio::time::timeout(self.endpoint.timeout, run).await {
            Ok(outcome) => outcome,
            // Still throttled when time ran out: say so rather than "timeout".
            Err(_) => Err(match progress.last_throttle {
                Some(retry_after) => ProvisioningError::Throttled { retry_after },
                None => ProvisioningError::Timeout(self.endpoint.timeout),
            }),
        };
        Registration {
            outcome,
            polls: progress.polls,
            throttled: progress.throttled,
        }
    }

    fn options(
        &self,
        registration_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<MqttOptions, ProvisioningError> {
        let ep = &self.endpoint;
        let dial = MqttDial {
            client_id: registration_id,
            username: Self::username(&ep.id_scope, registration_id),
            host: &ep.host,
            port: ep.port,
            websocket: ep.websocket,
            keep_alive: ep.keep_alive,
        };
        let mut opts = self
            .tls
            .mqtt_options(dial, chain, key)
            .map_err(|e| ProvisioningError::Setup(e.to_string()))?;
        // DPS keeps no session state and recommends CleanSession 1.
        opts.set_clean_session(true)
            .set_max_packet_size(128 * 1024, 128 * 1024);
        Ok(opts)
    }

    async fn run(
        &self,
        registration_id: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        payload: Option<serde_json::Value>,
        progress: &mut Progress,
    ) -> Result<Assignment, ProvisioningError> {
        let opts = self.options(registration_id, chain, key)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 4);
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(self.endpoint.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(network);

        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(connection_error(e)),
            }
        }
        client
            .try_subscribe(RESPONSE_FILTER, QoS::AtLeastOnce)
            .map_err(|e| ProvisioningError::Closed(e.to_string()))?;
        let body = serde_json::json!({"registrationId": registration_id, "payload": payload});
        let register_body = serde_json::to_vec(&body).unwrap_or_default();

        let mut rid = 0u32;
        let mut current = Request::Register;
        let mut due = Some(Instant::now());
        let outcome = loop {
            let event = match due {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        rid += 1;
                        due = None;
                        if let Err(e) = send(&client, rid, &current, &register_body, progress) {
                            break Err(e);
                        }
                        continue;
                    }
                    event = eventloop.poll() => event,
                },
                None => eventloop.poll().await,
            };
            let publish = match event {
                Ok(Event::Incoming(Packet::Publish(p))) => p,
                Ok(_) => continue,
                Err(e) => break Err(connection_error(e)),
            };
            let Some(response) = parse_response(&publish.topic) else {
                continue;
            };
            if due.is_some() || response.rid != rid.to_string() {
                continue; // an answer to an earlier request
            }
            match answer::next(
                &self.endpoint.polling,
                &current,
                &response,
                &publish.payload,
                progress,
            ) {
                Next::Done(outcome) => break outcome,
                Next::Send(request, wait) => {
                    current = request;
                    due = Some(Instant::now() + wait);
                }
            }
        };
        let _ = client.try_disconnect();
        // Let the DISCONNECT leave, briefly; the connection is dropped either way.
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        outcome
    }
}

/// Publishes `request` with request id `rid`.
fn send(
    client: &AsyncClient,
    rid: u32,
    request: &Request,
    register_body: &[u8],
    progress: &mut Progress,
) -> Result<(), ProvisioningError> {
    let (topic, body) = match request {
        Request::Register => (
            format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}"),
            register_body.to_vec(),
        ),
        Request::Poll { operation_id } => {
            progress.polls += 1;
            let op = crate::iothub::sas::url_encode(operation_id);
            (
                format!(
                    "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}"
                ),
                Vec::new(),
            )
        }
    };
    client
        .try_publish(topic, QoS::AtLeastOnce, false, body)
        .map_err(|e| ProvisioningError::Closed(e.to_string()))
}

fn connection_error(e: ConnectionError) -> ProvisioningError {
    use std::io::ErrorKind;
    match e {
        ConnectionError::ConnectionRefused(code) => {
            ProvisioningError::ConnectRefused(connack_code(code))
        }
        ConnectionError::Tls(e) => ProvisioningError::Tls(e.to_string()),
        ConnectionError::Io(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::NotFound | ErrorKind::AddrNotAvailable
            ) =>
        {
            ProvisioningError::Transport(e.to_string())
        }
        ConnectionError::NetworkTimeout => ProvisioningError::Transport("network timeout".into()),
        other => ProvisioningError::Closed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_follow_retry_after_scaled_or_fixed() {
        let p = Polling::default();
        assert_eq!(p.wait(None), Duration::from_secs(2));
        assert_eq!(p.wait(Some(Duration::from_secs(3))), Duration::from_secs(3));
        let fast = Polling { scale: 0.01, ..p };
        assert_eq!(
            fast.wait(Some(Duration::from_secs(3))),
            Duration::from_millis(30)
        );
        let fixed = Polling {
            fixed: Some(Duration::from_millis(5)),
            ..p
        };
        assert_eq!(
            fixed.wait(Some(Duration::from_secs(3))),
            Duration::from_millis(5)
        );
    }

    #[test]
    fn usernames_have_no_question_mark() {
        let u = DpsClient::username("0ne00000A0A", "dev-1");
        assert!(
            u.starts_with("0ne00000A0A/registrations/dev-1/api-version=2019-03-31&ClientVersion=")
        );
        assert!(!u.contains('?'));
    }
}

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

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;

use answer::{Next, Progress, Request, parse_response};

mod answer;

/// DPS's public device endpoint in Azure.
pub const GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";
/// The api-version Microsoft's C# and Python SDKs put in the username.
pub const API_VERSION: &str = "2019-03-31";
const RESPONSE_FILTER: &str = "$dps/registrations/res/#";

/// How long to wait between requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polling {
    /// The wait when DPS sends no `retry-after` (2 s, as the SDKs).
    pub default_interval: Duration,
    /// Multiplies every wait, `retry-after` included (below 1 for compressed runs).
    pub scale: f64,
    /// Replaces every wait when set.
    pub fixed: Option<Duration>,
    /// Send a throttled (429) request again after its `retry-after`, as the SDKs do, rather than
    /// give up at once with [`ProvisioningError::Throttled`].
    pub retry_throttled: bool,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(2),
            scale: 1.0,
            fixed: None,
            retry_throttled: true,
        }
    }
}

impl Polling {
    /// The wait before the next request, given DPS's `retry-after`.
    pub fn wait(&self, retry_after: Option<Duration>) -> Duration {
        match self.fixed {
            Some(fixed) => fixed,
            None => retry_after
                .unwrap_or(self.default_interval)
                .mul_f64(self.scale.max(0.0)),
        }
    }
}

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

/// Where DPS assigned a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub assigned_hub: String,
    pub device_id: String,
    /// `assigned`.
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset` or
    /// `reprovisionedToInitialAssignment`.
    pub substatus: Option<String>,
    /// The group that admitted the device (none for an individual enrolment).
    pub enrollment_group_id: Option<String>,
    pub operation_id: String,
}

/// Why a registration did not end in an assignment. `kind()` is the label counted in metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProvisioningError {
    #[error("cannot reach DPS: {0}")]
    Transport(String),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("DPS refused the connection with CONNACK {0}")]
    ConnectRefused(u8),
    #[error("DPS closed the connection: {0}")]
    Closed(String),
    #[error("DPS throttled the registration; retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    #[error("DPS answered {status} (error {code:?}): {message}")]
    Failed {
        /// The response status (200 for a registration whose status is `failed`).
        status: u16,
        /// DPS's `errorCode`.
        code: Option<u64>,
        message: String,
    },
    #[error("the device's enrolment is disabled")]
    Disabled,
    #[error("DPS did not assign the device within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from DPS: {0}")]
    Protocol(String),
    #[error("client setup: {0}")]
    Setup(String),
}

impl ProvisioningError {
    pub fn kind(&self) -> String {
        match self {
            Self::Transport(_) => "transport".into(),
            Self::Tls(_) => "tls".into(),
            Self::ConnectRefused(code) => format!("connack_{code}"),
            Self::Closed(_) => "closed".into(),
            Self::Throttled { .. } => "throttled".into(),
            Self::Failed { .. } => "failed".into(),
            Self::Disabled => "disabled".into(),
            Self::Timeout(_) => "timeout".into(),
            Self::Protocol(_) => "protocol".into(),
            Self::Setup(_) => "setup".into(),
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
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl DpsClient {
    pub fn new(endpoint: DpsEndpoint, roots: RootCertStore) -> Self {
        crate::crypto::install_crypto_provider();
        Self {
            endpoint,
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
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
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProvisioningError::Setup(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(chain, key)
            .map_err(|e| ProvisioningError::Setup(format!("client certificate: {e}")))?;
        tls.resumption = rustls::client::Resumption::disabled();
        let ep = &self.endpoint;
        let tls = TlsConfiguration::Rustls(Arc::new(tls));
        let (broker, transport) = match ep.websocket {
            true => (
                format!("wss://{}:{}/$iothub/websocket", url_host(&ep.host), ep.port),
                Transport::wss_with_config(tls),
            ),
            false => (ep.host.clone(), Transport::tls_with_config(tls)),
        };
        let mut opts = MqttOptions::new(registration_id, broker, ep.port);
        // DPS keeps no session state and recommends CleanSession 1.
        opts.set_keep_alive(ep.keep_alive)
            .set_credentials(Self::username(&ep.id_scope, registration_id), "")
            .set_clean_session(true)
            .set_max_packet_size(128 * 1024, 128 * 1024)
            .set_transport(transport);
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

/// An IPv6 literal goes in brackets inside a URL.
fn url_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    }
}

fn connection_error(e: ConnectionError) -> ProvisioningError {
    use std::io::ErrorKind;
    match e {
        ConnectionError::ConnectionRefused(code) => ProvisioningError::ConnectRefused(match code {
            ConnectReturnCode::Success => 0,
            ConnectReturnCode::RefusedProtocolVersion => 1,
            ConnectReturnCode::BadClientId => 2,
            ConnectReturnCode::ServiceUnavailable => 3,
            ConnectReturnCode::BadUserNamePassword => 4,
            ConnectReturnCode::NotAuthorized => 5,
        }),
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

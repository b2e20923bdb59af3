//! Embedded emulators of EZCA ([`ca`]) and IoT Hub ([`hub`]), faithful to the wire protocols in
//! `reference/`. They listen on loopback by default and share nothing with the device side except
//! protocol models and `crypto`.
//!
//! [`Emulators::start`] starts both on ephemeral loopback ports for an embedded run;
//! [`Emulators::start_on`] on chosen addresses ([`standalone`] is `fleetsim emulate`). Shared
//! pieces: [`tls`] (server PKI and the HTTPS accept loop), [`token`] (Azure AD stand-in tokens) and
//! [`gcra`] (the rate limiter with reservations behind the CA's capacity model and the hub's
//! throttles). [`persist`] is what a resumed soak (`--state`) saves of them: both report durable
//! changes to a journal and restart from a [`persist::Restore`] ([`Emulators::start_restored`]).

pub mod amqp;
pub mod ca;
pub mod gcra;
pub mod hub;
pub mod persist;
pub mod standalone;
pub mod tls;
pub mod token;

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use ca::{CaConfig, CaEmulator};
pub use hub::{HubConfig, HubEmulator};
pub use tls::ServerPki;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Setup(String),
}

/// Both emulators, running.
pub struct Emulators {
    pub ca: CaEmulator,
    pub hub: HubEmulator,
    /// Root of the emulators' TLS server certificates: clients trust it.
    pub tls_root: CertificateDer<'static>,
    pub hub_mqtt_addr: SocketAddr,
    /// MQTT over WebSocket: `wss://{hub_websocket_addr}/$iothub/websocket`.
    pub hub_websocket_addr: SocketAddr,
    pub hub_registry_url: String,
    /// More MQTT/TLS listeners of the hub, on other loopback addresses ([`Emulators::add_mqtt_listener`]).
    pub hub_mqtt_extra: Vec<SocketAddr>,
    /// The hub's AMQP endpoint (C2D sends, Event Hub-compatible reads): `amqps://{amqp_addr}`.
    pub amqp_addr: SocketAddr,
    pub amqp: amqp::AmqpEndpoint,
    /// The hub's C2D queues, fed by the AMQP endpoint.
    pub c2d: std::sync::Arc<amqp::C2dQueues>,
    pki: ServerPki,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Where each emulator endpoint listens (port 0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub ca: SocketAddr,
    pub hub_mqtt: SocketAddr,
    pub hub_registry: SocketAddr,
    pub hub_websocket: SocketAddr,
    pub amqp: SocketAddr,
}

impl Addresses {
    /// Every endpoint on an ephemeral port of `ip`.
    pub fn ephemeral(ip: std::net::IpAddr) -> Self {
        let any = SocketAddr::new(ip, 0);
        Self {
            ca: any,
            hub_mqtt: any,
            hub_registry: any,
            hub_websocket: any,
            amqp: any,
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| EmulatorError::Io(std::io::Error::new(e.kind(), format!("{addr}: {e}"))))
}

/// The hub's `iothubowner` policy, read back from its connection string, and the hub's name.
fn owner_policy(hub: &HubEmulator) -> (amqp::AccessPolicy, String) {
    let cs = hub.connection_string();
    let secret = cs.to_secret_string();
    let key = secret
        .split(';')
        .find_map(|kv| kv.strip_prefix("SharedAccessKey="))
        .unwrap_or_default();
    let policy = amqp::AccessPolicy {
        name: cs.key_name.clone(),
        primary_key: key.to_string(),
        secondary_key: None,
    };
    let name = hub
        .host_name()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    (policy, name)
}

/// The AMQP endpoint of `hub` with its C2D queues (devices must be in the hub's registry).
fn amqp_endpoint(hub: &HubEmulator) -> (amqp::AmqpEndpoint, std::sync::Arc<amqp::C2dQueues>) {
    let (policy, entity) = owner_policy(hub);
    let registry = hub.clone();
    let c2d = std::sync::Arc::new(amqp::C2dQueues::new(Default::default(), move |id| {
        registry.device(id).is_some()
    }));
    let config = amqp::AmqpConfig {
        host_name: hub.host_name().to_string(),
        entity,
        policies: vec![policy],
    };
    let endpoint = amqp::AmqpEndpoint::new(config, c2d.clone(), hub.event_log());
    (endpoint, c2d)
}

impl Emulators {
    /// Starts the CA and the hub on ephemeral ports of `ip` (a loopback address), and makes the hub
    /// trust the CA's root, as EZCA's one-click trust does.
    pub async fn start(
        ip: std::net::IpAddr,
        ca: &CaConfig,
        hub: &HubConfig,
    ) -> Result<Self, EmulatorError> {
        Self::start_on(Addresses::ephemeral(ip), ca, hub).await
    }

    /// Like [`Emulators::start`], on the given addresses.
    pub async fn start_on(
        addrs: Addresses,
        ca: &CaConfig,
        hub: &HubConfig,
    ) -> Result<Self, EmulatorError> {
        Self::start_restored(addrs, ca, hub, &persist::Restore::default()).await
    }

    /// Like [`Emulators::start_on`], from the state of emulators saved earlier (resumed soaks).
    pub async fn start_restored(
        addrs: Addresses,
        ca: &CaConfig,
        hub: &HubConfig,
        restore: &persist::Restore,
    ) -> Result<Self, EmulatorError> {
        crate::crypto::install_crypto_provider();
        let pki = ServerPki::new("fleetsim emulators")?;
        let stop = CancellationToken::new();

        let ca_listener = bind(addrs.ca).await?;
        let ca_emulator = CaEmulator::restored(&ca_listener, ca, restore.ca.as_ref())?;
        ca_emulator.restore(&restore.issued, &restore.domains);
        let hub_emulator = HubEmulator::new(hub)?;
        hub_emulator.restore_devices(&restore.hub_devices);
        hub_emulator.trust_ca(ca_emulator.root_der());
        if ca.disable_devices_on_revoke {
            ca_emulator.disable_devices_on_revoke(hub_emulator.clone());
        }

        let mqtt_listener = bind(addrs.hub_mqtt).await?;
        let registry_listener = bind(addrs.hub_registry).await?;
        let websocket_listener = bind(addrs.hub_websocket).await?;
        let hub_websocket_addr = websocket_listener.local_addr()?;
        let hub_mqtt_addr = mqtt_listener.local_addr()?;
        let hub_registry_url = format!("https://{}", registry_listener.local_addr()?);

        let (amqp, c2d) = amqp_endpoint(&hub_emulator);
        let amqp_listener = bind(addrs.amqp).await?;
        let amqp_addr = amqp_listener.local_addr()?;
        let amqp_names = [
            amqp_addr.ip().to_string(),
            hub_emulator.host_name().to_string(),
            "localhost".into(),
        ];
        let amqp_tls = amqp::AmqpEndpoint::tls_config(&pki, &amqp_names)?;
        let on_stop = |t: &CancellationToken| {
            let t = t.clone();
            async move { t.cancelled().await }
        };
        let tasks = vec![
            ca_emulator.serve(ca_listener, &pki, on_stop(&stop))?,
            hub_emulator.serve_mqtt(mqtt_listener, &pki, on_stop(&stop))?,
            hub_emulator.serve_registry(registry_listener, &pki, on_stop(&stop))?,
            hub_emulator.serve_websocket(websocket_listener, &pki, on_stop(&stop))?,
            amqp.serve(amqp_listener, amqp_tls, on_stop(&stop)),
        ];
        Ok(Self {
            ca: ca_emulator,
            hub: hub_emulator,
            tls_root: pki.root_der(),
            hub_mqtt_addr,
            hub_websocket_addr,
            hub_registry_url,
            hub_mqtt_extra: Vec::new(),
            amqp_addr,
            amqp,
            c2d,
            pki,
            stop,
            tasks,
        })
    }

    /// Serves the hub's MQTT/TLS endpoint on one more address (port 0: any free port), until
    /// shutdown. Devices spread over several destination addresses are not limited by one
    /// address's ~28k ephemeral source ports.
    pub async fn add_mqtt_listener(
        &mut self,
        addr: SocketAddr,
    ) -> Result<SocketAddr, EmulatorError> {
        let listener = bind(addr).await?;
        let local = listener.local_addr()?;
        let stop = self.stop.clone();
        let task =
            self.hub
                .serve_mqtt(listener, &self.pki, async move { stop.cancelled().await })?;
        self.tasks.push(task);
        self.hub_mqtt_extra.push(local);
        Ok(local)
    }

    /// The Event Hub-compatible connection string of the hub's built-in endpoint (holds the
    /// `iothubowner` key: never log it).
    pub fn event_hub_connection_string(&self) -> String {
        let (policy, _) = owner_policy(&self.hub);
        self.amqp.event_hub_connection_string(&policy)
    }

    /// Stops accepting and waits for the servers to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

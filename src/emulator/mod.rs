//! Embedded emulators of EZCA ([`ca`]) and IoT Hub ([`hub`]), faithful to the wire protocols in
//! `reference/`. They listen on loopback by default and share nothing with the device side except
//! protocol models and `crypto`.
//!
//! [`Emulators::start`] starts both on ephemeral loopback ports for an embedded run;
//! [`Emulators::start_on`] on chosen addresses ([`standalone`] is `fleetsim emulate`). The CA and
//! the hub do not know each other: the assembly here wires the CA's revocation hook to the hub's
//! registry ("disable device on revoke"). [`Emulators::start_dps`] adds the Device Provisioning
//! Service ([`dps`]), linked to the hub (and to further hubs, [`Emulators::add_hub`]) through
//! [`dps::LinkedHub`]. Shared pieces: [`listener`] (the one accept loop and drain policy of every
//! server), [`tls`] (server PKI, HTTPS over the listener), [`http`] (the bounded HTTP serving of
//! every REST endpoint: authentication before bodies, body limits, timeouts), [`mqtt_wire`] and [`websocket`] (MQTT
//! framing and the WebSocket bridge of the hub and DPS), [`shared_port`] (the hub's and DPS's one
//! HTTPS port, REST and WebSocket upgrades together, as IoT Hub's 443), [`token`] (Azure AD stand-in tokens) and
//! [`gcra`] (the rate limiter with reservations behind the CA's capacity model and the throttles).
//! [`persist`] is what a resumed soak (`--state`) saves of them: both report durable changes to a
//! journal and restart from a [`persist::Restore`] ([`Emulators::start_restored`]).

pub mod amqp;
pub mod ca;
mod chaos;
pub mod dps;
mod error;
pub mod faults;
pub mod gcra;
pub mod http;
pub mod hub;
pub mod listener;
pub mod mqtt_wire;
pub mod persist;
mod restart;
pub mod shared_port;
pub mod standalone;
pub mod state_file;
pub mod tls;
pub mod token;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use ca::{CaConfig, CaEmulator};
pub use dps::{DpsConfig, DpsEmulator};
pub use error::EmulatorError;
pub use hub::{HubConfig, HubEmulator};
pub use tls::ServerPki;

/// Both emulators, running.
pub struct Emulators {
    pub ca: CaEmulator,
    pub hub: HubEmulator,
    /// Root of the emulators' TLS server certificates: clients trust it.
    pub tls_root: CertificateDer<'static>,
    pub hub_mqtt_addr: SocketAddr,
    /// MQTT over WebSocket: `wss://{hub_websocket_addr}/$iothub/websocket` (the registry's
    /// port unless a port of its own was asked for).
    pub hub_websocket_addr: SocketAddr,
    pub hub_registry_url: String,
    /// More MQTT/TLS listeners of the hub, on other loopback addresses ([`Emulators::add_mqtt_listener`]).
    pub hub_mqtt_extra: Vec<SocketAddr>,
    /// DPS, once [`Emulators::start_dps`] started it.
    pub dps: Option<RunningDps>,
    /// Further hubs ([`Emulators::add_hub`]), for DPS to spread devices over.
    pub extra_hubs: Vec<ExtraHub>,
    /// The hub's AMQP endpoint (C2D sends, Event Hub-compatible reads): `amqps://{amqp_addr}`.
    pub amqp_addr: SocketAddr,
    pub amqp: amqp::AmqpEndpoint,
    /// The hub's C2D queues, fed by the AMQP endpoint.
    pub c2d: std::sync::Arc<amqp::C2dQueues>,
    pki: Arc<ServerPki>,
    /// Tells the hub's device endpoints to go down for a while ([`Emulators::restart_hub`]).
    restarts: tokio::sync::broadcast::Sender<std::time::Duration>,
    /// Timeouts and caps of the HTTP servers (the CA, the registry, DPS's service API).
    http_limits: http::HttpLimits,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Where each emulator endpoint listens (port 0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub ca: SocketAddr,
    pub hub_mqtt: SocketAddr,
    /// The hub's HTTPS port: REST, and MQTT and AMQP over WebSocket (IoT Hub's 443).
    pub hub_registry: SocketAddr,
    /// MQTT over WebSocket on a port of its own too (the registry's port serves it anyway).
    pub hub_websocket: Option<SocketAddr>,
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
            hub_websocket: None,
            amqp: any,
        }
    }
}

/// How the emulators' servers are set up beyond their addresses.
pub struct Servers {
    /// Timeouts, header size and connection cap of the HTTP servers.
    pub http: http::HttpLimits,
    /// The root of the servers' TLS certificates (a new one when absent; `fleetsim emulate
    /// --state` keeps one, so clients keep trusting the emulators across a restart).
    pub pki: Option<ServerPki>,
}

/// Where DPS's endpoints listen (port 0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct DpsAddresses {
    /// MQTT over TLS (8883 in Azure, fixed in Microsoft's SDKs).
    pub mqtt: SocketAddr,
    /// MQTT over WebSocket on a port of its own too (the service port serves it anyway, as
    /// DPS's 443 does).
    pub websocket: Option<SocketAddr>,
    /// The service REST API.
    pub service: SocketAddr,
}

impl DpsAddresses {
    /// Every endpoint on an ephemeral port of `ip`.
    pub fn ephemeral(ip: std::net::IpAddr) -> Self {
        let any = SocketAddr::new(ip, 0);
        Self {
            mqtt: any,
            websocket: None,
            service: any,
        }
    }
}

/// DPS, running.
pub struct RunningDps {
    pub emulator: DpsEmulator,
    pub mqtt_addr: SocketAddr,
    /// `wss://{websocket_addr}/$iothub/websocket`.
    pub websocket_addr: SocketAddr,
    pub service_url: String,
}

/// A hub started by [`Emulators::add_hub`].
pub struct ExtraHub {
    pub hub: HubEmulator,
    pub mqtt_addr: SocketAddr,
}

/// The name under which EZCA's root is uploaded to DPS.
pub const EZCA_ROOT_CERTIFICATE: &str = "fleetsim-ezca-root";
/// The name under which EZCA's default (ECDSA) issuing CA is uploaded to DPS.
pub const EZCA_ISSUING_CERTIFICATE: &str = "fleetsim-ezca-issuing";

/// DPS reaches a hub emulator through its registry, as DPS reaches a linked hub.
impl dps::LinkedHub for HubEmulator {
    fn host_name(&self) -> &str {
        HubEmulator::host_name(self)
    }

    fn provision_device(&self, device_id: &str) -> Result<(), String> {
        match self.provision_ca_device(device_id) {
            true => Ok(()),
            false => Err(format!("'{device_id}' is not a valid device id")),
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = bind_hint(addr, &e);
        EmulatorError::Io(std::io::Error::new(e.kind(), format!("{addr}: {e}{hint}")))
    })
}

/// What to do about a failed bind, when we can tell: a port below 1024 needs a privilege.
pub fn bind_hint(addr: SocketAddr, e: &std::io::Error) -> String {
    match (e.kind(), addr.port()) {
        (std::io::ErrorKind::PermissionDenied, 1..1024) => format!(
            " (ports below 1024 need root or the CAP_NET_BIND_SERVICE capability: run as root, \
             or `sudo setcap cap_net_bind_service=+ep <path to fleetsim>`, or lower \
             net.ipv4.ip_unprivileged_port_start to {} or below)",
            addr.port()
        ),
        (std::io::ErrorKind::AddrInUse, _) => {
            " (another process listens there: stop it or choose another port)".into()
        }
        _ => String::new(),
    }
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

/// The AMQP endpoint of `hub`, filling the hub's C2D queues (which its MQTT endpoint delivers).
fn amqp_endpoint(hub: &HubEmulator) -> (amqp::AmqpEndpoint, std::sync::Arc<amqp::C2dQueues>) {
    let (policy, entity) = owner_policy(hub);
    let c2d = hub.c2d();
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
        let servers = Servers {
            http: http::HttpLimits::default(),
            pki: None,
        };
        Self::start_with(addrs, ca, hub, restore, servers).await
    }

    /// Like [`Emulators::start_restored`], with the servers' settings.
    pub async fn start_with(
        addrs: Addresses,
        ca: &CaConfig,
        hub: &HubConfig,
        restore: &persist::Restore,
        servers: Servers,
    ) -> Result<Self, EmulatorError> {
        crate::crypto::install_crypto_provider();
        let pki = Arc::new(match servers.pki {
            Some(pki) => pki,
            None => ServerPki::new("fleetsim emulators")?,
        });
        let (restarts, _) = tokio::sync::broadcast::channel(4);
        let http_limits = servers.http;
        let stop = CancellationToken::new();

        let ca_listener = bind(addrs.ca).await?;
        let ca_emulator = match &restore.ca_secrets {
            Some(saved) => CaEmulator::from_saved(&ca_listener, ca, saved)?,
            None => CaEmulator::restored(&ca_listener, ca, restore.ca.as_ref())?,
        };
        ca_emulator.restore(&restore.issued, &restore.domains);
        let hub_emulator = HubEmulator::from_saved(hub, restore.hub_secrets.as_ref())?;
        hub_emulator.restore_devices(&restore.hub_devices);
        hub_emulator.trust_ca(ca_emulator.root_der());
        if ca.disable_devices_on_revoke {
            let hub = hub_emulator.clone();
            ca_emulator.on_revoke(Arc::new(move |device| {
                let disabled = hub.disable_device(device);
                tracing::debug!(%device, disabled, "revocation disabled the device in the hub");
            }));
        }

        let mqtt_listener = bind(addrs.hub_mqtt).await?;
        let registry_listener = bind(addrs.hub_registry).await?;
        let websocket_listener = match addrs.hub_websocket {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let hub_websocket_addr = match &websocket_listener {
            Some(l) => l.local_addr()?,
            None => registry_listener.local_addr()?,
        };
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
        let mut tasks = vec![
            ca_emulator.serve_with(ca_listener, &pki, http_limits, on_stop(&stop))?,
            restart::supervise(
                hub_emulator.clone(),
                pki.clone(),
                restart::Endpoint::MqttTls,
                mqtt_listener,
                stop.clone(),
                restarts.subscribe(),
            )?,
            // The shared HTTPS port (REST, and MQTT/AMQP over WebSocket) stays up through a
            // `restart_hub` fault, as the registry does: WebSocket sessions on it are not cut.
            hub_emulator.serve_shared(
                registry_listener,
                &pki,
                http_limits,
                Some(amqp.websocket_session()),
                on_stop(&stop),
            )?,
            amqp.serve(amqp_listener, amqp_tls, on_stop(&stop)),
        ];
        if let Some(listener) = websocket_listener {
            tasks.push(restart::supervise(
                hub_emulator.clone(),
                pki.clone(),
                restart::Endpoint::WebSocket,
                listener,
                stop.clone(),
                restarts.subscribe(),
            )?);
        }
        Ok(Self {
            ca: ca_emulator,
            hub: hub_emulator,
            tls_root: pki.root_der(),
            hub_mqtt_addr,
            hub_websocket_addr,
            hub_registry_url,
            hub_mqtt_extra: Vec::new(),
            dps: None,
            extra_hubs: Vec::new(),
            amqp_addr,
            amqp,
            c2d,
            pki,
            restarts,
            http_limits,
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
        let task = restart::supervise(
            self.hub.clone(),
            self.pki.clone(),
            restart::Endpoint::MqttTls,
            listener,
            self.stop.clone(),
            self.restarts.subscribe(),
        )?;
        self.tasks.push(task);
        self.hub_mqtt_extra.push(local);
        Ok(local)
    }

    /// Starts DPS on `addrs`, linked to the hub and to every hub added so far, with EZCA's root
    /// and issuing CA uploaded as [`EZCA_ROOT_CERTIFICATE`] and [`EZCA_ISSUING_CERTIFICATE`] (for
    /// enrolment groups' `caReferences`). It has no enrolments yet.
    pub async fn start_dps(
        &mut self,
        addrs: DpsAddresses,
        config: &DpsConfig,
    ) -> Result<&RunningDps, EmulatorError> {
        if self.dps.is_some() {
            return Err(EmulatorError::Setup("DPS is already running".into()));
        }
        let dps = DpsEmulator::new(config);
        dps.add_certificate(EZCA_ROOT_CERTIFICATE, self.ca.root_der());
        dps.add_certificate(EZCA_ISSUING_CERTIFICATE, self.ca.issuing_der());
        dps.link_hub(std::sync::Arc::new(self.hub.clone()));
        for extra in &self.extra_hubs {
            dps.link_hub(std::sync::Arc::new(extra.hub.clone()));
        }
        let mqtt = bind(addrs.mqtt).await?;
        let websocket = match addrs.websocket {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let service = bind(addrs.service).await?;
        let running = RunningDps {
            mqtt_addr: mqtt.local_addr()?,
            websocket_addr: match &websocket {
                Some(l) => l.local_addr()?,
                None => service.local_addr()?,
            },
            service_url: format!("https://{}", service.local_addr()?),
            emulator: dps.clone(),
        };
        let stop = |t: &CancellationToken| {
            let t = t.clone();
            async move { t.cancelled().await }
        };
        self.tasks.extend([
            dps.serve_mqtt(mqtt, &self.pki, stop(&self.stop))?,
            dps.serve_service_with(service, &self.pki, self.http_limits, stop(&self.stop))?,
        ]);
        if let Some(listener) = websocket {
            let task = dps.serve_websocket(listener, &self.pki, stop(&self.stop))?;
            self.tasks.push(task);
        }
        Ok(self.dps.insert(running))
    }

    /// Starts one more hub with `config` (its MQTT/TLS endpoint on `mqtt`), trusting EZCA's root
    /// like the first, and links it to DPS.
    pub async fn add_hub(
        &mut self,
        config: &HubConfig,
        mqtt: SocketAddr,
    ) -> Result<&ExtraHub, EmulatorError> {
        let hub = HubEmulator::new(config)?;
        hub.trust_ca(self.ca.root_der());
        let listener = bind(mqtt).await?;
        let mqtt_addr = listener.local_addr()?;
        let stop = self.stop.clone();
        let task = hub.serve_mqtt(listener, &self.pki, async move { stop.cancelled().await })?;
        self.tasks.push(task);
        if let Some(dps) = &self.dps {
            dps.emulator.link_hub(std::sync::Arc::new(hub.clone()));
        }
        self.extra_hubs.push(ExtraHub { hub, mqtt_addr });
        Ok(&self.extra_hubs[self.extra_hubs.len() - 1])
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

#[cfg(test)]
mod bind_tests {
    use super::bind_hint;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_refused_low_port_names_the_privilege_and_a_taken_port_says_so() {
        let at = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let denied = Error::from(ErrorKind::PermissionDenied);
        assert!(bind_hint(at(443), &denied).contains("CAP_NET_BIND_SERVICE"));
        assert!(bind_hint(at(443), &denied).contains("ip_unprivileged_port_start to 443"));
        // Above 1024 a refusal is something else (a security module): no guess.
        assert_eq!(bind_hint(at(8883), &denied), "");
        let taken = Error::from(ErrorKind::AddrInUse);
        assert!(bind_hint(at(8883), &taken).contains("another process"));
    }
}

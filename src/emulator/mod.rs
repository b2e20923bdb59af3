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
//! journal and restart from a [`persist::Restore`] ([`Emulators::start_restored`]). [`serving`]
//! binds the listeners, restores the pair and serves the hub's endpoints for the assembly here.

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
mod serving;
pub mod shared_port;
pub mod standalone;
pub mod state_file;
pub mod tls;
pub mod token;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

pub use ca::{CaConfig, CaEmulator};
pub use dps::{DpsConfig, DpsEmulator};
pub use error::EmulatorError;
pub use hub::{HubConfig, HubEmulator};
pub use serving::{Addresses, bind_hint};
use serving::{HubListeners, HubServing, bind, restored_pair, stopped};
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
        let (ca_emulator, hub_emulator) = restored_pair(&ca_listener, ca, hub, restore)?;
        let listeners = HubListeners::bind(&addrs).await?;
        let hub_mqtt_addr = listeners.mqtt.local_addr()?;
        let hub_websocket_addr = match &listeners.websocket {
            Some(l) => l.local_addr()?,
            None => listeners.registry.local_addr()?,
        };
        let hub_registry_url = format!("https://{}", listeners.registry.local_addr()?);
        let amqp_addr = listeners.amqp.local_addr()?;
        let (amqp, c2d) = amqp_endpoint(&hub_emulator);

        let ca_task = ca_emulator.serve_with(ca_listener, &pki, http_limits, stopped(&stop))?;
        let serving = HubServing {
            hub: &hub_emulator,
            pki: &pki,
            http: http_limits,
            stop: &stop,
            restarts: &restarts,
        };
        let mut tasks = serving.serve(listeners, &amqp)?;
        tasks.push(ca_task);
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

    fn serving(&self) -> HubServing<'_> {
        HubServing {
            hub: &self.hub,
            pki: &self.pki,
            http: self.http_limits,
            stop: &self.stop,
            restarts: &self.restarts,
        }
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
        let task = self
            .serving()
            .supervised(restart::Endpoint::MqttTls, listener)?;
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
        self.tasks.extend([
            dps.serve_mqtt(mqtt, &self.pki, stopped(&self.stop))?,
            dps.serve_service_with(service, &self.pki, self.http_limits, stopped(&self.stop))?,
        ]);
        if let Some(listener) = websocket {
            let task = dps.serve_websocket(listener, &self.pki, stopped(&self.stop))?;
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
        let task = hub.serve_mqtt(listener, &self.pki, stopped(&self.stop))?;
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

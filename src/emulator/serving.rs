//! Starting the emulators' servers: binding their listeners (with a hint when a port is refused
//! or taken), restoring the CA and the hub from saved state, and serving the hub's endpoints
//! (MQTT/TLS under the `restart_hub` fault's supervision, the shared HTTPS port, AMQP).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::emulator::amqp::AmqpEndpoint;
use crate::emulator::ca::{CaConfig, CaEmulator};
use crate::emulator::error::EmulatorError;
use crate::emulator::http;
use crate::emulator::hub::{HubConfig, HubEmulator};
use crate::emulator::persist;
use crate::emulator::restart;
use crate::emulator::tls::ServerPki;

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

pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener, EmulatorError> {
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

/// A future that ends when `stop` is cancelled: the shutdown signal of every server started here.
pub(super) fn stopped(
    stop: &CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let stop = stop.clone();
    async move { stop.cancelled().await }
}

/// The CA and the hub as `restore` left them (empty for a fresh start), the hub trusting the
/// CA's root, and, when `ca` asks for it, the CA's revocations disabling devices in the hub.
pub(super) fn restored_pair(
    ca_listener: &TcpListener,
    ca: &CaConfig,
    hub: &HubConfig,
    restore: &persist::Restore,
) -> Result<(CaEmulator, HubEmulator), EmulatorError> {
    let ca_emulator = match &restore.ca_secrets {
        Some(saved) => CaEmulator::from_saved(ca_listener, ca, saved)?,
        None => CaEmulator::restored(ca_listener, ca, restore.ca.as_ref())?,
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
    Ok((ca_emulator, hub_emulator))
}

/// The hub's endpoints, bound before anything is served so that a taken port fails the start.
pub(super) struct HubListeners {
    pub(super) mqtt: TcpListener,
    /// The shared HTTPS port: REST, and MQTT/AMQP over WebSocket.
    pub(super) registry: TcpListener,
    pub(super) websocket: Option<TcpListener>,
    pub(super) amqp: TcpListener,
}
impl HubListeners {
    pub(super) async fn bind(addrs: &Addresses) -> Result<Self, EmulatorError> {
        Ok(Self {
            mqtt: bind(addrs.hub_mqtt).await?,
            registry: bind(addrs.hub_registry).await?,
            websocket: match addrs.hub_websocket {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
            amqp: bind(addrs.amqp).await?,
        })
    }
}

/// What serving the hub's endpoints needs: the hub, the TLS PKI, the HTTP limits, the shutdown
/// token and the `restart_hub` fault's channel.
pub(super) struct HubServing<'a> {
    pub(super) hub: &'a HubEmulator,
    pub(super) pki: &'a Arc<ServerPki>,
    pub(super) http: http::HttpLimits,
    pub(super) stop: &'a CancellationToken,
    pub(super) restarts: &'a tokio::sync::broadcast::Sender<std::time::Duration>,
}
impl HubServing<'_> {
    /// Serves every endpoint in `listeners` until the stop token is cancelled.
    pub(super) fn serve(
        &self,
        listeners: HubListeners,
        amqp: &AmqpEndpoint,
    ) -> Result<Vec<JoinHandle<()>>, EmulatorError> {
        let amqp_names = [
            listeners.amqp.local_addr()?.ip().to_string(),
            self.hub.host_name().to_string(),
            "localhost".into(),
        ];
        let amqp_tls = AmqpEndpoint::tls_config(self.pki, &amqp_names)?;
        let mut tasks = vec![
            self.supervised(restart::Endpoint::MqttTls, listeners.mqtt)?,
            // The shared HTTPS port (REST, and MQTT/AMQP over WebSocket) stays up through a
            // `restart_hub` fault, as the registry does: WebSocket sessions on it are not cut.
            self.hub.serve_shared(
                listeners.registry,
                self.pki,
                self.http,
                Some(amqp.websocket_session()),
                stopped(self.stop),
            )?,
            amqp.serve(listeners.amqp, amqp_tls, stopped(self.stop)),
        ];
        if let Some(listener) = listeners.websocket {
            tasks.push(self.supervised(restart::Endpoint::WebSocket, listener)?);
        }
        Ok(tasks)
    }

    /// An endpoint that goes down and comes back with the `restart_hub` fault.
    pub(super) fn supervised(
        &self,
        endpoint: restart::Endpoint,
        listener: TcpListener,
    ) -> Result<JoinHandle<()>, EmulatorError> {
        restart::supervise(
            self.hub.clone(),
            self.pki.clone(),
            endpoint,
            listener,
            self.stop.clone(),
            self.restarts.subscribe(),
        )
    }
}

#[cfg(test)]
mod bind_tests {
    use super::*;
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

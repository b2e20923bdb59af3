//! Embedded emulators of EZCA ([`ca`]) and IoT Hub ([`hub`]), faithful to the wire protocols in
//! `reference/`. They listen on loopback by default and share nothing with the device side except
//! protocol models and `crypto`.
//!
//! [`Emulators::start`] starts both on ephemeral loopback ports for an embedded run; tests and
//! `fleetsim emulate` can also start each server on a listener of their own.

pub mod ca;
pub mod hub;
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
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Emulators {
    /// Starts the CA and the hub on ephemeral ports of `ip` (a loopback address), and makes the hub
    /// trust the CA's root, as EZCA's one-click trust does.
    pub async fn start(
        ip: std::net::IpAddr,
        ca: &CaConfig,
        hub: &HubConfig,
    ) -> Result<Self, EmulatorError> {
        crate::crypto::install_crypto_provider();
        let pki = ServerPki::new("fleetsim emulators")?;
        let stop = CancellationToken::new();

        let ca_listener = TcpListener::bind((ip, 0)).await?;
        let ca_emulator = CaEmulator::new(&ca_listener, ca)?;
        let hub_emulator = HubEmulator::new(hub)?;
        hub_emulator.trust_ca(ca_emulator.root_der());

        let mqtt_listener = TcpListener::bind((ip, 0)).await?;
        let registry_listener = TcpListener::bind((ip, 0)).await?;
        let websocket_listener = TcpListener::bind((ip, 0)).await?;
        let hub_websocket_addr = websocket_listener.local_addr()?;
        let hub_mqtt_addr = mqtt_listener.local_addr()?;
        let hub_registry_url = format!("https://{}", registry_listener.local_addr()?);

        let on_stop = |t: &CancellationToken| {
            let t = t.clone();
            async move { t.cancelled().await }
        };
        let tasks = vec![
            ca_emulator.serve(ca_listener, &pki, on_stop(&stop))?,
            hub_emulator.serve_mqtt(mqtt_listener, &pki, on_stop(&stop))?,
            hub_emulator.serve_registry(registry_listener, &pki, on_stop(&stop))?,
            hub_emulator.serve_websocket(websocket_listener, &pki, on_stop(&stop))?,
        ];
        Ok(Self {
            ca: ca_emulator,
            hub: hub_emulator,
            tls_root: pki.root_der(),
            hub_mqtt_addr,
            hub_websocket_addr,
            hub_registry_url,
            stop,
            tasks,
        })
    }

    /// Stops accepting and waits for the servers to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

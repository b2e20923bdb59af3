//! What a device's two MQTT clients share, the hub's transport ([`super::mqtt`]) and DPS's
//! ([`super::dps`]): one trust store and crypto provider for every device ([`DeviceTls`]), the
//! per-device rustls config that presents the device's certificate chain, the rumqttc options
//! for MQTT over TLS or over WebSocket ([`DeviceTls::mqtt_options`]), and a refused CONNACK as
//! its number ([`connack_code`]). Each client then sets what differs: sessions, in-flight window,
//! packet sizes.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, MqttOptions, TlsConfiguration, Transport};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The device's TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}")]
    Protocols(rustls::Error),
    #[error("client certificate: {0}")]
    ClientCertificate(rustls::Error),
}

/// Where one MQTT connection goes and who it says it is.
pub struct MqttDial<'a> {
    /// The MQTT ClientId (the device id, or DPS's registration id: the certificate's CN).
    pub client_id: &'a str,
    /// The username (the hub's and DPS's differ); the password is empty: the certificate
    /// authenticates.
    pub username: String,
    /// Address to dial (a DNS name or an IP literal); also the TLS server name.
    pub host: &'a str,
    pub port: u16,
    /// MQTT over WebSocket (`wss://host:port/$iothub/websocket`, subprotocol `mqtt`), which the
    /// hub and DPS serve on the same path.
    pub websocket: bool,
    pub keep_alive: Duration,
}

/// The trust store and crypto provider all devices of a client share.
pub struct DeviceTls {
    roots: Arc<RootCertStore>,
    /// One crypto provider for every device's TLS config (it holds the cipher-suite and
    /// key-exchange tables; building one per connection cost ~1 KiB per device).
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl DeviceTls {
    pub fn new(roots: RootCertStore) -> Self {
        crate::crypto::install_crypto_provider();
        Self {
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    /// rumqttc options for one connection presenting `chain` (leaf first) with `key`: keep-alive,
    /// credentials and the TLS or WebSocket transport set, the rest left to the caller.
    pub fn mqtt_options(
        &self,
        dial: MqttDial<'_>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<MqttOptions, TlsSetupError> {
        let tls = self.client_config(Some((chain, key)))?;
        Ok(self.options_over(dial, tls, ""))
    }

    /// Like [`DeviceTls::mqtt_options`] for a SAS device: no client certificate, `password` (a
    /// SAS token) in CONNECT.
    pub fn mqtt_options_with_password(
        &self,
        dial: MqttDial<'_>,
        password: &str,
    ) -> Result<MqttOptions, TlsSetupError> {
        let tls = self.client_config(None)?;
        Ok(self.options_over(dial, tls, password))
    }

    /// The rustls config of one connection: presenting `certificate` (a chain, leaf first, and
    /// its key), or no client certificate (a SAS device) when `None`.
    pub fn client_config(
        &self,
        certificate: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::Protocols)?
            .with_root_certificates(self.roots.clone());
        let mut tls = match certificate {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsSetupError::ClientCertificate)?,
            None => builder.with_no_client_auth(),
        };
        // The default session cache preallocates room for 32 servers (several KiB) in every
        // device's config; a device reconnects after a renewal with a new certificate, where a
        // resumed session would carry the old identity anyway.
        tls.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(tls))
    }

    /// The MQTT options of a connection over `tls` (TLS or WebSocket, as `dial` says).
    fn options_over(
        &self,
        dial: MqttDial<'_>,
        tls: Arc<rustls::ClientConfig>,
        password: &str,
    ) -> MqttOptions {
        let tls = TlsConfiguration::Rustls(tls);
        let (broker, transport) = match dial.websocket {
            // rumqttc takes the whole URL as the broker address for WebSocket transports.
            true => (
                format!(
                    "wss://{}:{}/$iothub/websocket",
                    url_host(dial.host),
                    dial.port
                ),
                Transport::wss_with_config(tls),
            ),
            false => (dial.host.to_string(), Transport::tls_with_config(tls)),
        };
        let mut opts = MqttOptions::new(dial.client_id, broker, dial.port);
        opts.set_keep_alive(dial.keep_alive)
            .set_credentials(dial.username, password)
            .set_transport(transport);
        opts
    }
}

/// A CONNACK's return code as MQTT 3.1.1 numbers it (3: unavailable, 5: not authorised, ...).
pub fn connack_code(code: ConnectReturnCode) -> u8 {
    match code {
        ConnectReturnCode::Success => 0,
        ConnectReturnCode::RefusedProtocolVersion => 1,
        ConnectReturnCode::BadClientId => 2,
        ConnectReturnCode::ServiceUnavailable => 3,
        ConnectReturnCode::BadUserNamePassword => 4,
        ConnectReturnCode::NotAuthorized => 5,
    }
}

/// An IPv6 literal goes in brackets inside a URL.
pub(super) fn url_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_literals_are_bracketed_in_websocket_urls() {
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(url_host("hub.example"), "hub.example");
    }
}

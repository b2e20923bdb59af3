//! `fleetsim emulate`: both emulators as a standalone service for other tools and for
//! `fleetsim run` processes with a remote target. It writes what a client needs into a directory
//! (the TLS trust bundle, a bearer token for EZCA, the hub's connection string and its Event
//! Hub-compatible connection string, the secret files 0600, and a ready-to-use `target:` block) and serves until shutdown.

use std::future::Future;
use std::path::{Path, PathBuf};

use super::ca::IssuingKey;
use super::{Addresses, CaConfig, EmulatorError, Emulators, HubConfig};
use crate::crypto::{cert_to_pem, write_secret_file};

/// What the standalone emulators wrote, for the caller to print.
#[derive(Debug, Clone)]
pub struct Written {
    pub ca_url: String,
    /// CaID of the ECDSA and of the RSA issuing CA (GetAvailableSSLCAs lists both).
    pub ca_ids: Vec<(&'static str, String)>,
    pub hub_mqtt: std::net::SocketAddr,
    pub hub_websocket: std::net::SocketAddr,
    pub hub_registry_url: String,
    /// AMQP/TLS: C2D sends and the Event Hub-compatible endpoint.
    pub hub_amqp: std::net::SocketAddr,
    pub hub_host: String,
    pub trust_pem: PathBuf,
    pub token_file: PathBuf,
    pub connection_string_file: PathBuf,
    /// The Event Hub-compatible connection string of the hub's built-in endpoint (0600).
    pub event_hub_connection_string_file: PathBuf,
    /// An Azure AD-style token the hub's registry accepts (alternative to the connection string).
    pub hub_token_file: PathBuf,
    pub target_yaml: PathBuf,
}

/// Starts the emulators on `addrs`, writes the client files into `dir`, calls `ready` with what
/// was written, and serves until `shutdown`.
pub async fn run(
    addrs: Addresses,
    ca: &CaConfig,
    hub: &HubConfig,
    dir: &Path,
    token_lifetime_secs: u64,
    ready: impl FnOnce(&Written),
    shutdown: impl Future<Output = ()>,
) -> Result<(), EmulatorError> {
    let emulators = Emulators::start_on(addrs, ca, hub).await?;
    std::fs::create_dir_all(dir)?;
    let written = Written {
        ca_url: emulators.ca.url().to_string(),
        ca_ids: [
            (IssuingKey::EcdsaP256, "ECDSA"),
            (IssuingKey::Rsa2048, "RSA"),
        ]
        .into_iter()
        .filter_map(|(key, label)| Some((label, emulators.ca.ca_id(key)?)))
        .collect(),
        hub_mqtt: emulators.hub_mqtt_addr,
        hub_websocket: emulators.hub_websocket_addr,
        hub_registry_url: emulators.hub_registry_url.clone(),
        hub_amqp: emulators.amqp_addr,
        hub_host: emulators.hub.host_name().to_string(),
        trust_pem: dir.join("trust.pem"),
        token_file: dir.join("ezca-token"),
        connection_string_file: dir.join("hub-connection-string"),
        event_hub_connection_string_file: dir.join("eventhub-connection-string"),
        hub_token_file: dir.join("hub-token"),
        target_yaml: dir.join("target.yaml"),
    };
    std::fs::write(&written.trust_pem, cert_to_pem(&emulators.tls_root))?;
    let token = emulators.ca.mint_token(
        &uuid::Uuid::new_v4().to_string(),
        "fleetsim@emulator.invalid",
        token_lifetime_secs,
    );
    write_secret_file(&written.token_file, token.as_bytes())?;
    write_secret_file(
        &written.connection_string_file,
        emulators
            .hub
            .connection_string()
            .to_secret_string()
            .as_bytes(),
    )?;
    write_secret_file(
        &written.event_hub_connection_string_file,
        emulators.event_hub_connection_string().as_bytes(),
    )?;
    let hub_token = emulators
        .hub
        .mint_token("fleetsim-emulate", token_lifetime_secs);
    write_secret_file(&written.hub_token_file, hub_token.as_bytes())?;
    std::fs::write(&written.target_yaml, target_block(&written))?;
    ready(&written);
    shutdown.await;
    emulators.shutdown().await;
    Ok(())
}

/// The ECDSA CA is chosen (any key kind can use it); the RSA one is offered in a comment.
fn ca_id_lines(w: &Written) -> String {
    w.ca_ids
        .iter()
        .enumerate()
        .map(|(i, (label, id))| {
            let comment = if i == 0 { "" } else { "# " };
            format!("      {comment}ca_id: {id}  # {label} issuing CA\n")
        })
        .collect()
}

/// A `target:` block for scenarios that run against these emulators. Secrets are read from the
/// environment, as for the real services.
fn target_block(w: &Written) -> String {
    format!(
        "# Export the secrets first:\n\
         #   export EZCA_TOKEN=$(cat {token})\n\
         #   export IOTHUB_CONNECTION_STRING=$(cat {conn})\n\
         target:\n  remote:\n    ezca:\n      url: {ca}\n{ca_ids}      trust_pem: {trust}\n    iothub:\n      address: {mqtt_ip}\n      mqtt_port: {mqtt_port}\n      websocket_port: {ws_port}\n      registry_url: {registry}\n      trust_pem: {trust}\n",
        token = w.token_file.display(),
        conn = w.connection_string_file.display(),
        ca = w.ca_url,
        ca_ids = ca_id_lines(w),
        trust = w.trust_pem.display(),
        mqtt_ip = w.hub_mqtt.ip(),
        mqtt_port = w.hub_mqtt.port(),
        ws_port = w.hub_websocket.port(),
        registry = w.hub_registry_url,
    )
}

//! `fleetsim emulate`: the emulators as a standalone service for other tools and for
//! `fleetsim run` processes with a remote target. It writes what a client needs into a directory
//! (the TLS trust bundle, a bearer token for EZCA, the hub's and DPS's connection strings, the hub's Event
//! Hub-compatible connection string, secret
//! files 0600, and ready-to-use `target:` blocks: `target.yaml`, and `target-dps.yaml` for
//! scenarios with `fleet.provisioning: dps`) and serves until shutdown.
//!
//! DPS gets an enrolment group, [`DEFAULT_GROUP`], that admits every certificate EZCA issues and
//! spreads devices over the linked hubs. Microsoft's SDKs fix port 8883 for DPS as for the hub and
//! check host names, so DPS listens on an address of its own (127.0.0.2 by default) and both names
//! go in `/etc/hosts`.

use std::future::Future;
use std::path::{Path, PathBuf};

use super::ca::IssuingKey;
use super::dps::enrollment::EnrollmentGroup;
use super::{
    Addresses, CaConfig, DpsAddresses, DpsConfig, EZCA_ROOT_CERTIFICATE, EmulatorError, Emulators,
    HubConfig,
};
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
    /// The device CA's root (`ezca-root.pem`): what devices' certificates chain to, the
    /// certificate to upload to a hub (trust.pem is the emulators' TLS root, for clients).
    pub device_ca_root: PathBuf,
    /// The default (ECDSA) issuing CA (`ezca-issuing.pem`, the `ca_id` target.yaml names): it
    /// signs device certificates, so it is what `fleetsim hub upload-ca --ezca` uploads.
    pub device_ca_issuing: PathBuf,
    /// The hub's Azure-style management resource (SKU, CA upload and verification).
    pub management_url: String,
    /// The hub's tier (`--sku`, `--units`), if it has one.
    pub tier: Option<(crate::iothub::quotas::Sku, u32)>,
    pub token_file: PathBuf,
    pub connection_string_file: PathBuf,
    /// The Event Hub-compatible connection string of the hub's built-in endpoint (0600).
    pub event_hub_connection_string_file: PathBuf,
    /// An Azure AD-style token the hub's registry accepts (alternative to the connection string).
    pub hub_token_file: PathBuf,
    pub target_yaml: PathBuf,
    pub dps: Option<WrittenDps>,
}

/// What `fleetsim emulate` wrote about DPS.
#[derive(Debug, Clone)]
pub struct WrittenDps {
    pub mqtt: std::net::SocketAddr,
    pub websocket: std::net::SocketAddr,
    pub service_url: String,
    pub host: String,
    pub id_scope: String,
    /// `HostName=…;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=…` (0600).
    pub connection_string_file: PathBuf,
    /// The `target:` block with DPS, for scenarios with `fleet.provisioning: dps`.
    pub target_yaml: PathBuf,
}

/// The enrolment group `fleetsim emulate` creates: EZCA's root, hashed over all linked hubs.
pub const DEFAULT_GROUP: &str = "fleetsim-ezca";

/// What to start and where to write.
pub struct Options<'a> {
    pub addrs: Addresses,
    pub ca: &'a CaConfig,
    pub hub: &'a HubConfig,
    /// DPS's addresses and settings; no DPS when absent.
    pub dps: Option<(DpsAddresses, DpsConfig)>,
    pub dir: &'a Path,
    pub token_lifetime_secs: u64,
    /// `--state FILE`: keys, trust and records kept across restarts ([`super::state_file`]).
    pub state: Option<&'a Path>,
}

fn default_group() -> EnrollmentGroup {
    EnrollmentGroup::for_uploaded_ca(DEFAULT_GROUP, EZCA_ROOT_CERTIFICATE)
}

/// Starts DPS with its default group and writes its connection string.
async fn start_dps(
    emulators: &mut Emulators,
    addrs: DpsAddresses,
    config: &DpsConfig,
    dir: &Path,
) -> Result<WrittenDps, EmulatorError> {
    let running = emulators.start_dps(addrs, config).await?;
    let dps = &running.emulator;
    dps.put_enrollment_group(default_group())
        .map_err(|e| EmulatorError::Setup(format!("default enrolment group: {}", e.message)))?;
    let written = WrittenDps {
        mqtt: running.mqtt_addr,
        websocket: running.websocket_addr,
        service_url: running.service_url.clone(),
        host: dps.host_name().to_string(),
        id_scope: dps.id_scope().to_string(),
        connection_string_file: dir.join("dps-connection-string"),
        target_yaml: dir.join("target-dps.yaml"),
    };
    let secret = dps.connection_string().to_secret_string();
    write_secret_file(&written.connection_string_file, secret.as_bytes())?;
    Ok(written)
}

/// Starts the emulators, writes the client files into `options.dir`, calls `ready` with what
/// was written, and serves until `shutdown`.
pub async fn run(
    options: Options<'_>,
    ready: impl FnOnce(&Written),
    shutdown: impl Future<Output = ()>,
) -> Result<(), EmulatorError> {
    let Options {
        addrs,
        ca,
        hub,
        dps,
        dir,
        token_lifetime_secs,
        state,
    } = options;
    let mut emulators = start_emulators(addrs, ca, hub, state).await?;
    std::fs::create_dir_all(dir)?;
    let dps = match dps {
        Some((addrs, config)) => Some(start_dps(&mut emulators, addrs, &config, dir).await?),
        None => None,
    };
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
        device_ca_root: dir.join("ezca-root.pem"),
        device_ca_issuing: dir.join("ezca-issuing.pem"),
        management_url: format!(
            "{}/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fleetsim/providers/Microsoft.Devices/IotHubs/{}",
            emulators.hub_registry_url.trim_end_matches('/'),
            emulators.hub.host_name().split('.').next().unwrap_or("hub")
        ),
        tier: emulators.hub.tier(),
        token_file: dir.join("ezca-token"),
        connection_string_file: dir.join("hub-connection-string"),
        event_hub_connection_string_file: dir.join("eventhub-connection-string"),
        hub_token_file: dir.join("hub-token"),
        target_yaml: dir.join("target.yaml"),
        dps,
    };
    std::fs::write(&written.trust_pem, cert_to_pem(&emulators.tls_root))?;
    std::fs::write(
        &written.device_ca_root,
        cert_to_pem(&emulators.ca.root_der()),
    )?;
    std::fs::write(
        &written.device_ca_issuing,
        cert_to_pem(&emulators.ca.issuing_der()),
    )?;
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
    std::fs::write(&written.target_yaml, target_block(&written, None))?;
    if let Some(d) = &written.dps {
        std::fs::write(&d.target_yaml, target_block(&written, Some(d)))?;
    }
    ready(&written);
    shutdown.await;
    emulators.shutdown().await;
    Ok(())
}

/// Starts the emulators, from the state file when there is one, and keeps it from then on.
async fn start_emulators(
    addrs: Addresses,
    ca: &CaConfig,
    hub: &HubConfig,
    state: Option<&Path>,
) -> Result<Emulators, EmulatorError> {
    let Some(path) = state else {
        return Emulators::start_on(addrs, ca, hub).await;
    };
    let (restore, pki) = match super::state_file::load(path)? {
        Some(saved) => (saved.restore, Some(saved.pki)),
        None => (super::persist::Restore::default(), None),
    };
    let servers = super::Servers {
        http: super::http::HttpLimits::default(),
        pki,
    };
    let emulators = Emulators::start_with(addrs, ca, hub, &restore, servers).await?;
    let writer = super::state_file::StateWriter::create(
        path,
        &emulators.pki,
        &emulators.ca.secrets(),
        &emulators.hub.secrets(),
        &restore,
    )?;
    emulators.ca.set_journal(writer.clone());
    emulators.hub.set_journal(writer);
    Ok(emulators)
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

/// A `target:` block for scenarios that run against these emulators, with `dps` for scenarios
/// with `fleet.provisioning: dps` (the hub is named, so devices DPS assigns to it dial its
/// address). Secrets are read from the environment, as for the real services.
fn target_block(w: &Written, dps: Option<&WrittenDps>) -> String {
    let (hub_host, dps_block) = match dps {
        Some(d) => (format!("      host: {}\n", w.hub_host), dps_block(d, w)),
        None => (
            String::new(),
            w.dps.as_ref().map(dps_lines).unwrap_or_default(),
        ),
    };
    format!(
        "# Export the secrets first:\n\
         #   export EZCA_TOKEN=$(cat {token})\n\
         #   export IOTHUB_CONNECTION_STRING=$(cat {conn})\n\
         target:\n  remote:\n    ezca:\n      url: {ca}\n{ca_ids}      trust_pem: {trust}\n    iothub:\n{hub_host}      address: {mqtt_ip}\n      mqtt_port: {mqtt_port}\n      websocket_port: {ws_port}\n      registry_url: {registry}\n      trust_pem: {trust}\n      management_url: {management}\n{tier}{dps}",
        token = w.token_file.display(),
        conn = w.connection_string_file.display(),
        ca = w.ca_url,
        ca_ids = ca_id_lines(w),
        trust = w.trust_pem.display(),
        mqtt_ip = w.hub_mqtt.ip(),
        mqtt_port = w.hub_mqtt.port(),
        ws_port = w.hub_websocket.port(),
        registry = w.hub_registry_url,
        management = w.management_url,
        tier = w
            .tier
            .map(|(sku, units)| format!("      sku: {sku}\n      units: {units}\n"))
            .unwrap_or_default(),
        dps = dps_block,
    )
}

/// DPS's part of `target-dps.yaml`.
fn dps_block(d: &WrittenDps, w: &Written) -> String {
    format!(
        "    dps:\n      global_endpoint: {ip}\n      mqtt_port: {port}\n      websocket_port: {ws}\n      id_scope: {scope}\n      trust_pem: {trust}\n",
        ip = d.mqtt.ip(),
        port = d.mqtt.port(),
        ws = d.websocket.port(),
        scope = d.id_scope,
        trust = w.trust_pem.display(),
    )
}

/// DPS, as comments in the registry target block: `target-dps.yaml` is the block with DPS.
fn dps_lines(d: &WrittenDps) -> String {
    format!(
        "    # DPS: enrolment group {DEFAULT_GROUP} admits every certificate EZCA issues, hashed over\n\
         #   the linked hubs. Its service API is {service} (export\n\
         #   DPS_CONNECTION_STRING=$(cat {conn})). SDKs check host names: map\n\
         #   \"{ip} {host}\" in /etc/hosts. For scenarios with fleet.provisioning: dps,\n\
         #   use {target} (id scope {scope}).\n",
        service = d.service_url,
        conn = d.connection_string_file.display(),
        ip = d.mqtt.ip(),
        host = d.host,
        target = d.target_yaml.display(),
        scope = d.id_scope,
    )
    .lines()
    .map(|l| format!("    {}\n", l.trim_start()))
    .collect()
}

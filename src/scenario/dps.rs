//! Provisioning through the Device Provisioning Service: `fleet.provisioning` (registry or
//! DPS), the embedded DPS a run can start (`target.embedded.dps`: how many linked hubs, the
//! allocation policy, its throttles and timings), the real one a remote run uses
//! (`target.remote.dps`: global endpoint and id scope), and the rules tying them together.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::device::{DeviceTransportKind, Registration};
use super::units::{Rate, Span};

/// How a device gets its hub identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Provisioning {
    /// fleetsim creates each identity in the hub's registry (`fleet.registration`).
    #[default]
    Registry,
    /// The device registers with DPS with its certificate and connects to the hub DPS assigns.
    Dps,
}

/// Linked hubs DPS allows at most (reference §6).
pub const MAX_LINKED_HUBS: u32 = 50;

/// The embedded DPS: started with the CA and the hub, linked to the hub and to `hubs - 1` more,
/// with one enrolment group that admits every certificate the embedded CA issues.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedDps {
    /// Hubs DPS assigns devices to: the embedded hub and `hubs - 1` more like it.
    #[serde(default = "default_hubs")]
    pub hubs: u32,
    /// `hashed` spreads devices evenly over the hubs; `static` puts them all on the first.
    #[serde(default)]
    pub allocation: DpsAllocation,
    /// DPS's published limits (1,000 registrations a minute per service, 5 operation-status
    /// polls per 10 s per device) or none.
    #[serde(default)]
    pub limits: DpsLimitsChoice,
    /// Registrations admitted per unit of time, instead of the limits' (e.g. a DPS whose quota
    /// was raised).
    #[serde(default)]
    pub registration_rate: Option<Rate>,
    /// The `retry-after` DPS sends while it assigns (whole seconds on the wire, at least 1 s).
    #[serde(default = "default_retry_after")]
    pub retry_after: Span,
    /// How long an assignment takes after the register request.
    #[serde(default = "default_assignment_delay")]
    pub assignment_delay: Span,
}

impl Default for EmbeddedDps {
    fn default() -> Self {
        Self {
            hubs: default_hubs(),
            allocation: DpsAllocation::default(),
            limits: DpsLimitsChoice::default(),
            registration_rate: None,
            retry_after: default_retry_after(),
            assignment_delay: default_assignment_delay(),
        }
    }
}

fn default_hubs() -> u32 {
    2
}
fn default_retry_after() -> Span {
    Span(std::time::Duration::from_secs(3))
}
fn default_assignment_delay() -> Span {
    Span(std::time::Duration::from_millis(500))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DpsAllocation {
    #[default]
    Hashed,
    Static,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DpsLimitsChoice {
    #[default]
    Published,
    Unlimited,
}

/// A real DPS (or `fleetsim emulate`'s).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteDps {
    /// The device endpoint: a host name or an IP address, also the TLS server name.
    #[serde(default = "default_global_endpoint")]
    pub global_endpoint: String,
    /// The service's id scope (`0ne…`), from the portal's overview page.
    pub id_scope: String,
    /// MQTT port (8883 on Azure).
    #[serde(default = "default_mqtt_port")]
    pub mqtt_port: u16,
    /// MQTT-over-WebSocket port (443 on Azure), used with `fleet.transport: websocket`.
    #[serde(default = "default_websocket_port")]
    pub websocket_port: u16,
    /// Extra PEM roots to trust for DPS's TLS (Azure's roots are built in).
    #[serde(default)]
    pub trust_pem: Option<PathBuf>,
}

fn default_global_endpoint() -> String {
    crate::iothub::dps::GLOBAL_ENDPOINT.into()
}
fn default_mqtt_port() -> u16 {
    8883
}
fn default_websocket_port() -> u16 {
    443
}

/// The target's DPS block, if it has one (the target imports this file, not the other way).
pub(super) enum DpsBlock<'a> {
    None,
    Embedded(&'a Spanned<EmbeddedDps>),
    Remote(&'a Spanned<RemoteDps>),
}

impl DpsBlock<'_> {
    fn at(&self) -> Option<Location> {
        match self {
            DpsBlock::None => None,
            DpsBlock::Embedded(d) => Some(d.referenced),
            DpsBlock::Remote(d) => Some(d.referenced),
        }
    }
}

/// The rules of provisioning: DPS provisioning needs a DPS in the target and registers no
/// identity itself; a DPS in the target is there for DPS provisioning; the embedded DPS's hubs
/// are between 1 and DPS's limit, and reachable over the fleet's transport.
pub(super) fn validate(
    provisioning: Option<&Spanned<Provisioning>>,
    registration: Registration,
    transport: DeviceTransportKind,
    block: DpsBlock,
) -> Result<(), (Location, String)> {
    let chosen = provisioning.map_or(Provisioning::Registry, |p| p.value);
    let at = provisioning.map_or(Location::UNKNOWN, |p| p.referenced);
    match (chosen, block.at()) {
        (Provisioning::Dps, None) => {
            return Err((
                at,
                "fleet.provisioning: dps needs a DPS in the target: target.embedded.dps \
                 (e.g. dps: {hubs: 2}) or target.remote.dps (with id_scope)"
                    .into(),
            ));
        }
        (Provisioning::Registry, Some(block)) => {
            return Err((
                block,
                "the target has a dps block but fleet.provisioning is registry: set \
                 fleet.provisioning: dps (or remove the dps block)"
                    .into(),
            ));
        }
        _ => {}
    }
    if chosen == Provisioning::Dps && registration == Registration::Bulk {
        return Err((
            at,
            "fleet.provisioning: dps creates identities through DPS: fleet.registration: bulk \
             does not apply"
                .into(),
        ));
    }
    match block {
        DpsBlock::Embedded(d) => validate_embedded(d, transport),
        DpsBlock::Remote(d) if d.value.id_scope.trim().is_empty() => {
            Err((d.referenced, "dps.id_scope is empty".into()))
        }
        _ => Ok(()),
    }
}

fn validate_embedded(
    d: &Spanned<EmbeddedDps>,
    transport: DeviceTransportKind,
) -> Result<(), (Location, String)> {
    let dps = &d.value;
    if !(1..=MAX_LINKED_HUBS).contains(&dps.hubs) {
        return Err((
            d.referenced,
            format!(
                "dps.hubs is {}: expected 1 to {MAX_LINKED_HUBS} (DPS links at most {MAX_LINKED_HUBS} hubs)",
                dps.hubs
            ),
        ));
    }
    if dps.hubs > 1 && transport == DeviceTransportKind::Websocket {
        return Err((
            d.referenced,
            "fleet.transport: websocket with dps.hubs above 1: the embedded run's further hubs \
             serve MQTT over TLS only"
                .into(),
        ));
    }
    if dps.retry_after.0 < std::time::Duration::from_secs(1) {
        return Err((
            d.referenced,
            "dps.retry_after is below 1s: DPS sends it in whole seconds".into(),
        ));
    }
    Ok(())
}

/// The operator's events (methods, desired patches, queries) go through one hub's service API,
/// the first hub's: an embedded DPS spreading devices over more hubs would leave most of them
/// out of reach, so such a run is refused where the first operator event stands.
pub(super) fn validate_operator(
    block: &DpsBlock,
    first_operator_event: Option<Location>,
) -> Result<(), (Location, String)> {
    match (block, first_operator_event) {
        (DpsBlock::Embedded(d), Some(at)) if d.value.hubs > 1 => Err((
            at,
            format!(
                "method, desired and query events reach devices through one hub's service API,                  but dps.hubs is {}: set dps.hubs: 1 for a DPS run with operator events",
                d.value.hubs
            ),
        )),
        _ => Ok(()),
    }
}

//! One simulated device: its life from enrolment to the end of the run, against services it
//! reaches only through traits, so other CAs, brokers and provisioning services can be plugged
//! in.
//!
//! The files import one way, from the bottom up (no cycles):
//! - leaves: [`backends`] (the service traits and [`Backends`], which names one implementation
//!   of each for a run), [`adapters`] (EZCA and IoT Hub behind those traits) and [`dps`] (DPS
//!   behind [`ProvisioningService`]), [`backoff`], [`behaviour`] (how a cohort's devices answer
//!   the cloud), [`gate`] (the fleet's limits), [`keys`] (where keys come from), [`control`] (the
//!   fleet's commands), [`messages`] (what telemetry sends and when: templates, sizes,
//!   properties, schedules);
//! - `core`: what every step shares: [`DeviceSpec`], [`Services`], [`DeviceReport`], the
//!   `Device` the steps are methods of, its timed tries with backoff, and how a life stops;
//! - the steps, each in its file over the core: `enrol` (a key and a certificate, or the stored
//!   ones via `resume`), `register` or, in a DPS run, `provision` (the hub DPS assigns),
//!   `connect` (to that hub; it provisions again when the hub refuses the device), `online` (the
//!   connected device's loop), and what it does from there: `telemetry`, `renewal` (renew and
//!   swap), `revocation` (revoke and cut-off) and `cloud` (subscriptions, twin, direct methods,
//!   desired properties: what the cloud sends, one more arm of the online loop);
//! - `lifecycle`: [`run_device`], the steps in order; a SAS device (`auth: sas`) lives by `sas`
//!   instead (its own registration, token connects and renewals, and its migration to a
//!   certificate, after which it lives as an X.509 device), over the leaf `sas_hub`.
//!
//! Where the next steps go: a new kind of cloud-to-device traffic is one more case in `cloud`,
//! as C2D messages are ([`c2d`]: what the application makes of them, `c2d.delivery`); another
//! provisioning service is one more implementation of [`ProvisioningService`].

pub mod adapters;
pub mod backends;
pub mod backoff;
pub mod behaviour;
pub mod c2d;
mod cloud;
mod connect;
pub mod control;
mod core;
pub mod dps;
mod enrol;
pub mod gate;
pub mod keys;
mod lifecycle;
pub mod messages;
mod online;
mod provision;
mod register;
mod renewal;
mod resume;
mod revocation;
mod sas;
pub mod sas_hub;
mod telemetry;

pub use self::core::{
    CloudReport, DeviceReport, DeviceSpec, RenewalPolicy, RevocationReport, SERIALS_KEPT, Services,
};
pub use backends::{
    Backends, CertificateAuthority, Delivery, DeviceRegistry, DeviceSession, DeviceTransport,
    FailureClass, Incoming, Issued, NoProvisioning, Placement, Provisioned, ProvisioningService,
    ServiceError, Session,
};
pub use lifecycle::run_device;

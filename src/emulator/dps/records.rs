//! Registration records, DPS's `DeviceRegistrationState` per registration id (what a device is
//! told when its operation completes, and what the service API's `GET /registrations/{id}`
//! returns), and which registration each live operation belongs to.

use std::collections::HashMap;

use serde::Serialize;

/// DPS's `substatus` of an assigned registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Substatus {
    /// Assigned to a hub for the first time.
    InitialAssignment,
    /// Moved to another hub, its twin with it.
    DeviceDataMigrated,
    /// Moved to another hub, its twin reset to the enrolment's initial twin.
    DeviceDataReset,
    /// Registered again and given the hub it had.
    ReprovisionedToInitialAssignment,
}

/// DPS's registration status values (lowercase on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationStatus {
    Unassigned,
    Assigning,
    Assigned,
    Failed,
    Disabled,
}

/// Which group admitted the device (device view only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Registration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_group_id: Option<String>,
}

/// A registration record: DPS's `DeviceRegistrationState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509: Option<X509Registration>,
    pub registration_id: String,
    pub created_date_time_utc: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub status: RegistrationStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substatus: Option<Substatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub last_updated_date_time_utc: String,
    pub etag: String,
}

impl RegistrationState {
    /// The record as the service API shows it (the device alone is told its group).
    pub fn service_view(&self) -> Self {
        Self {
            x509: None,
            ..self.clone()
        }
    }
}

pub(super) struct Record {
    pub state: RegistrationState,
    /// The operation of the latest register request; earlier ones are forgotten.
    pub operation_id: String,
    /// The hub of the last assignment, kept across re-registrations (and failures).
    pub hub: Option<String>,
}

/// Records by registration id, and which registration each live operation belongs to.
#[derive(Default)]
pub(super) struct Registrations {
    pub records: HashMap<String, Record>,
    /// Operation id → registration id.
    pub operations: HashMap<String, String>,
}

impl Registrations {
    pub fn record(&self, registration_id: &str) -> Option<RegistrationState> {
        self.records.get(registration_id).map(|r| r.state.clone())
    }

    /// Forgets a record (service `DELETE /registrations/{id}`); false if there was none.
    pub fn remove(&mut self, registration_id: &str) -> bool {
        match self.records.remove(registration_id) {
            Some(r) => {
                self.operations.remove(&r.operation_id);
                true
            }
            None => false,
        }
    }
}

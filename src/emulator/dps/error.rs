//! DPS's error body, `{errorCode, trackingId, message, info, timestampUtc}` (reference §6), the
//! same on the device side (in a `$dps/registrations/res/{status}/…` publish) and in the service
//! REST API, and the codes the emulator answers with.
//!
//! Codes seen on the wire: 401002 (certificate not trusted by any enrolment, "Invalid
//! certificate."), 404201 (no enrolment for a registration), 400208 / 400209 (assignment failed).
//! The others below follow DPS's `{HTTP status}{3 digits}` scheme but are inferred.

use serde::Serialize;

/// One DPS error: the HTTP status it travels with and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpsError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

/// The request body is not what DPS expects (not JSON, wrong fields).
pub const BAD_REQUEST: u32 = 400004;
/// The registration id in the body differs from the connection's.
pub const REGISTRATION_ID_MISMATCH: u32 = 400005;
/// No hub to assign the device to (none linked, or none the enrolment allows).
pub const NO_HUB: u32 = 400208;
/// The hub refused to create or update the device identity.
pub const HUB_REFUSED: u32 = 400209;
/// No enrolment trusts the device's certificate.
pub const UNAUTHORIZED: u32 = 401002;
/// The service REST API's token is missing, expired or wrong.
pub const SERVICE_UNAUTHORIZED: u32 = 401001;
/// An enrolment, registration or operation that does not exist.
pub const NOT_FOUND: u32 = 404201;
/// An If-Match etag that is not the current one.
pub const PRECONDITION_FAILED: u32 = 412001;
/// Over a DPS throttle.
pub const THROTTLED: u32 = 429001;

impl DpsError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, BAD_REQUEST, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, UNAUTHORIZED, "Invalid certificate.")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, NOT_FOUND, message)
    }

    pub fn throttled() -> Self {
        Self::new(
            429,
            THROTTLED,
            "Operations are being throttled by the service.",
        )
    }

    /// The JSON body, with a fresh tracking id and the current time.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            error_code: u32,
            tracking_id: String,
            message: &'a str,
            info: Option<()>,
            timestamp_utc: String,
        }
        serde_json::to_vec(&Body {
            error_code: self.code,
            tracking_id: uuid::Uuid::new_v4().to_string(),
            message: &self.message,
            info: None,
            timestamp_utc: now_utc(),
        })
        .unwrap_or_default()
    }
}

/// The current time as DPS writes it (RFC 3339, UTC).
pub fn now_utc() -> String {
    format_utc(time::OffsetDateTime::now_utc())
}

pub fn format_utc(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_dps_field_names() {
        let body: serde_json::Value =
            serde_json::from_slice(&DpsError::unauthorized().body()).unwrap();
        assert_eq!(body["errorCode"], 401002);
        assert_eq!(body["message"], "Invalid certificate.");
        assert!(body["info"].is_null());
        assert!(body["trackingId"].as_str().is_some_and(|t| t.len() == 36));
        assert!(
            body["timestampUtc"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
}

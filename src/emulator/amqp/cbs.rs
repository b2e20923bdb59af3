//! Claims-based security: the `$cbs` node's put-token (a SAS token for an audience, checked
//! against the hub's shared access policies with `iothub::sas`) and the grants a connection
//! holds afterwards. A link to a node other than `$cbs`/`$management` is attached only when an
//! unexpired grant covers its address, by path segment as IoT Hub compares SAS resources (for
//! the Event Hub-compatible endpoint ignoring case, as Event Hubs compares entity paths).

use crate::amqp::codec::Value;
use crate::amqp::message::{Body, Message, Properties};
use crate::iothub::sas::{self, SasRefusal};

/// The token type the SDKs put for SAS tokens.
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";

/// One shared access policy with the ServiceConnect right (C2D sends, the Event Hub-compatible
/// endpoint). Keys are base64; `Debug` leaves them out.
#[derive(Clone)]
pub struct AccessPolicy {
    pub name: String,
    pub primary_key: String,
    pub secondary_key: Option<String>,
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A resource in the form SAS tokens name them: `host/path`, without scheme or trailing slash,
/// the host lower-cased. An address without a host (`/messages/devicebound`) is on `host`.
pub fn resource_of(address: &str, host: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let rest = rest.trim_end_matches('/');
    let (h, path) = match rest.strip_prefix('/') {
        Some(path) => (host, format!("/{path}")),
        None => match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{p}")),
            None => (rest, String::new()),
        },
    };
    format!("{}{path}", h.to_ascii_lowercase())
}

/// Whether `grant` covers `resource` by whole path segments.
fn covers(grant: &str, resource: &str) -> bool {
    resource == grant
        || resource
            .strip_prefix(grant)
            .is_some_and(|r| r.starts_with('/'))
}

/// [`covers`] ignoring ASCII case, as Event Hubs compares entity paths: azure-eventhub puts its
/// token for `…/{hub}/consumergroups/{group}` and attaches to `…/{hub}/ConsumerGroups/{group}/…`.
fn covers_ignoring_case(grant: &str, resource: &str) -> bool {
    covers(&grant.to_ascii_lowercase(), &resource.to_ascii_lowercase())
}

/// The grants of one connection.
#[derive(Debug, Default)]
pub struct Grants(Vec<(String, u64)>);

impl Grants {
    pub fn add(&mut self, resource: String, expiry: u64) {
        self.0.retain(|(r, _)| *r != resource);
        self.0.push((resource, expiry));
    }

    pub fn covers(&self, resource: &str, now: u64) -> bool {
        self.0
            .iter()
            .any(|(r, expiry)| expiry.saturating_add(300) >= now && covers(r, resource))
    }

    /// [`Grants::covers`] for the Event Hub-compatible endpoint, whose paths compare ignoring
    /// case.
    pub fn covers_entity(&self, resource: &str, now: u64) -> bool {
        self.0.iter().any(|(r, expiry)| {
            expiry.saturating_add(300) >= now && covers_ignoring_case(r, resource)
        })
    }
}

/// Checks `token` for `audience` (a resource). Returns the token's expiry.
pub fn check_token(
    policies: &[AccessPolicy],
    token: &str,
    audience: &str,
    host: &str,
    now: u64,
) -> Result<u64, String> {
    let mut parsed = sas::parse(token).ok_or("not a SharedAccessSignature token")?;
    let policy_name = parsed
        .policy
        .clone()
        .ok_or("the token names no shared access policy (skn)")?;
    let policy = policies
        .iter()
        .find(|p| p.name == policy_name)
        .ok_or_else(|| format!("no shared access policy '{policy_name}' with ServiceConnect"))?;
    // Tokens name their resource with or without a scheme (`sb://…` for the Event Hub endpoint).
    parsed.resource = resource_of(&parsed.resource, host);
    let keys = || std::iter::once(&policy.primary_key).chain(policy.secondary_key.as_ref());
    let mut last = SasRefusal::BadSignature;
    for key in keys() {
        match sas::verify(&parsed, key, audience, now) {
            Ok(()) => return Ok(parsed.expiry),
            Err(e) => last = e,
        }
    }
    // Event Hubs (and so azure-eventhub) sign with the key's text as the HMAC key, where IoT Hub
    // decodes it from base64 first: the Event Hub-compatible endpoint accepts both.
    if last == SasRefusal::BadSignature && keys().any(|k| service_bus_signature_ok(&parsed, k)) {
        if parsed.expiry.saturating_add(300) < now {
            return Err(SasRefusal::Expired.to_string());
        }
        if !covers(&parsed.resource, audience) {
            return Err(SasRefusal::WrongResource.to_string());
        }
        return Ok(parsed.expiry);
    }
    Err(format!("{last}"))
}

fn service_bus_signature_ok(token: &sas::ParsedToken, key: &str) -> bool {
    use aws_lc_rs::hmac;
    use base64::Engine;
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    let tag = hmac::sign(
        &key,
        format!("{}\n{}", token.raw_sr, token.expiry).as_bytes(),
    );
    let expected = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), token.sig.as_bytes())
        .is_ok()
}

/// Handles one put-token request: on success the audience joins `grants`. Returns the status
/// code and description to answer with.
pub fn put_token(
    policies: &[AccessPolicy],
    grants: &mut Grants,
    request: &Message,
    host: &str,
    now: u64,
) -> (i32, String) {
    let prop = |k: &str| request.application_property(k).and_then(Value::as_text);
    if prop("operation") != Some("put-token") {
        return (
            400,
            "the $cbs node only supports operation put-token".into(),
        );
    }
    if prop("type") != Some(SAS_TOKEN_TYPE) {
        return (400, format!("unsupported token type; use {SAS_TOKEN_TYPE}"));
    }
    let Some(audience) = prop("name") else {
        return (400, "put-token without a name (audience)".into());
    };
    let token = match &request.body {
        Body::Value(Value::String(t)) => t.as_str(),
        _ => return (400, "put-token body must be the token as a string".into()),
    };
    let audience = resource_of(audience, host);
    match check_token(policies, token, &audience, host, now) {
        Ok(expiry) => {
            grants.add(audience, expiry);
            (200, "OK".into())
        }
        Err(why) => (401, format!("IotHubUnauthorized (401003): {why}")),
    }
}

/// The response to a request on a management-style node: correlation-id = the request's
/// message-id (same AMQP type: uamqp matches it as a ulong, pyamqp as a UUID).
pub fn response(request: &Message, status: i32, description: &str, body: Value) -> Message {
    Message {
        properties: Properties {
            correlation_id: request.properties.message_id.clone(),
            to: request.properties.reply_to.clone(),
            ..Default::default()
        },
        application_properties: vec![
            ("status-code".into(), Value::Int(status)),
            ("status-description".into(), Value::str(description)),
        ],
        body: Body::Value(body),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn policies() -> Vec<AccessPolicy> {
        vec![AccessPolicy {
            name: "service".into(),
            primary_key: "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
            secondary_key: Some(KEY.into()),
        }]
    }

    fn request(token: &str, audience: &str) -> Message {
        Message {
            properties: Properties {
                message_id: Some(Value::Ulong(9)),
                ..Default::default()
            },
            application_properties: vec![
                ("operation".into(), Value::str("put-token")),
                ("type".into(), Value::str(SAS_TOKEN_TYPE)),
                ("name".into(), Value::str(audience)),
            ],
            body: Body::Value(Value::str(token)),
            ..Default::default()
        }
    }

    #[test]
    fn resources_normalise() {
        assert_eq!(
            resource_of("amqps://Hub.azure-devices.net/messages/devicebound", "x"),
            "hub.azure-devices.net/messages/devicebound"
        );
        assert_eq!(
            resource_of("/messages/devicebound", "h"),
            "h/messages/devicebound"
        );
        assert_eq!(resource_of("https://h/", "x"), "h");
        assert_eq!(
            resource_of("sb://h/hub/ConsumerGroups/$Default/Partitions/0", "x"),
            "h/hub/ConsumerGroups/$Default/Partitions/0"
        );
        assert!(covers("h/hub", "h/hub/ConsumerGroups/a"));
        assert!(!covers("h/hub", "h/hub2"));
    }

    #[test]
    fn put_token_grants_and_refuses() {
        let now = 1_000;
        let good = sas::token("h", KEY, Some("service"), 2_000).unwrap();
        let mut grants = Grants::default();
        let (status, _) = put_token(
            &policies(),
            &mut grants,
            &request(&good, "https://h"),
            "h",
            now,
        );
        assert_eq!(status, 200);
        assert!(grants.covers("h/messages/devicebound", now));

        let mut none = Grants::default();
        let expired = sas::token("h", KEY, Some("service"), 100).unwrap();
        let (status, why) = put_token(
            &policies(),
            &mut none,
            &request(&expired, "https://h"),
            "h",
            now,
        );
        assert_eq!((status, why.contains("expired")), (401, true));
        let wrong_key = sas::token(
            "h",
            "AgECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            Some("service"),
            2_000,
        )
        .unwrap();
        assert_eq!(
            put_token(
                &policies(),
                &mut none,
                &request(&wrong_key, "https://h"),
                "h",
                now
            )
            .0,
            401
        );
        let unknown_policy = sas::token("h", KEY, Some("nobody"), 2_000).unwrap();
        assert_eq!(
            put_token(
                &policies(),
                &mut none,
                &request(&unknown_policy, "https://h"),
                "h",
                now
            )
            .0,
            401
        );
        let narrow = sas::token("h/devices/d1", KEY, Some("service"), 2_000).unwrap();
        assert_eq!(
            put_token(
                &policies(),
                &mut none,
                &request(&narrow, "https://h"),
                "h",
                now
            )
            .0,
            401
        );
        assert!(!none.covers("h/messages/devicebound", now));

        let eh = sas::token("sb://h/hub", KEY, Some("service"), 2_000).unwrap();
        let (status, _) = put_token(
            &policies(),
            &mut none,
            &request(&eh, "sb://h/hub"),
            "h",
            now,
        );
        assert_eq!(status, 200);
        assert!(none.covers("h/hub/ConsumerGroups/$Default/Partitions/1", now));
        assert!(!none.covers("h/messages/devicebound", now));

        // azure-eventhub's consumer puts a token for the consumer group, lower-cased.
        let cg = sas::token(
            "sb://h/hub/consumergroups/$Default",
            KEY,
            Some("service"),
            2_000,
        )
        .unwrap();
        let mut consumer = Grants::default();
        let (status, _) = put_token(
            &policies(),
            &mut consumer,
            &request(&cg, "sb://h/hub/consumergroups/$Default"),
            "h",
            now,
        );
        assert_eq!(status, 200);
        assert!(consumer.covers_entity("h/hub/ConsumerGroups/$Default/Partitions/1", now));
        assert!(!consumer.covers_entity("h/hub/ConsumerGroups/other/Partitions/1", now));
        assert!(!consumer.covers_entity("h/hub/ConsumerGroups/$Default2/Partitions/1", now));
    }

    #[test]
    fn the_response_echoes_the_message_id_with_its_type() {
        let r = response(&request("t", "a"), 200, "OK", Value::Null);
        assert_eq!(r.properties.correlation_id, Some(Value::Ulong(9)));
        assert_eq!(
            r.application_property("status-code"),
            Some(&Value::Int(200))
        );
    }
}

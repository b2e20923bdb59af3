//! The SASL layer (part 5.3) as IoT Hub offers it: `MSSBCBS` (authenticate later with `$cbs`,
//! what uamqp and pyamqp pick), `PLAIN` (the password is a SAS token for the hub) and `ANONYMOUS`
//! (CBS as well). Any other mechanism gets outcome `auth` and the connection closes.

use super::cbs::{AccessPolicy, check_token, resource_of};
use crate::amqp::codec::{Decoder, Value};
use crate::amqp::frames::{Frame, TYPE_SASL, frame};
use crate::amqp::performatives::{SASL_INIT, SASL_MECHANISMS, SASL_OUTCOME, encode_value};

pub const MECHANISMS: [&str; 3] = ["MSSBCBS", "PLAIN", "ANONYMOUS"];

/// The mechanisms frame the server opens SASL with.
pub fn mechanisms_frame() -> Vec<u8> {
    let list = Value::Array(MECHANISMS.iter().map(|m| Value::sym(m)).collect());
    frame(
        TYPE_SASL,
        0,
        &encode_value(&Value::described(SASL_MECHANISMS, vec![list])),
        &[],
    )
}

/// SASL outcome codes: 0 ok, 1 auth.
pub fn outcome_frame(code: u8) -> Vec<u8> {
    frame(
        TYPE_SASL,
        0,
        &encode_value(&Value::described(
            SASL_OUTCOME,
            vec![Value::Ubyte(code), Value::Null],
        )),
        &[],
    )
}

/// What a successful SASL exchange leaves behind: for PLAIN, the grant its token gave.
#[derive(Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub mechanism: &'static str,
    pub grant: Option<(String, u64)>,
}

/// Reads the client's sasl-init and decides. `Err` carries the reason to log (the caller sends
/// outcome `auth` and closes).
pub fn on_init(
    f: &Frame,
    policies: &[AccessPolicy],
    host: &str,
    now: u64,
) -> Result<Authenticated, String> {
    if f.kind != TYPE_SASL {
        return Err("expected a SASL frame".into());
    }
    let init = Decoder::new(&f.body)
        .value()
        .map_err(|e| format!("undecodable sasl-init: {e}"))?;
    let Value::Described(d, fields) = init else {
        return Err("sasl-init is not a described list".into());
    };
    let Value::List(fields) = *fields else {
        return Err("sasl-init is not a list".into());
    };
    if d.as_u64() != Some(SASL_INIT) {
        return Err("expected sasl-init".into());
    }
    let mechanism = fields
        .first()
        .and_then(Value::as_text)
        .ok_or("sasl-init without a mechanism")?;
    let Some(&known) = MECHANISMS.iter().find(|m| **m == mechanism) else {
        return Err(format!(
            "SASL mechanism '{mechanism}' is not offered (offered: {MECHANISMS:?})"
        ));
    };
    if known != "PLAIN" {
        return Ok(Authenticated {
            mechanism: known,
            grant: None,
        });
    }
    let Some(Value::Binary(response)) = fields.get(1) else {
        return Err("PLAIN without an initial response".into());
    };
    // authzid NUL authcid NUL password; the password is a SAS token for the hub.
    let password = response
        .split(|b| *b == 0)
        .nth(2)
        .and_then(|p| std::str::from_utf8(p).ok())
        .ok_or("PLAIN response is not authzid\\0user\\0password")?;
    let resource = resource_of(host, host);
    let expiry = check_token(policies, password, &resource, host, now)
        .map_err(|why| format!("PLAIN credentials refused: {why}"))?;
    Ok(Authenticated {
        mechanism: "PLAIN",
        grant: Some((resource, expiry)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn init(mechanism: &str, response: Option<&[u8]>) -> Frame {
        let mut fields = vec![Value::sym(mechanism)];
        if let Some(r) = response {
            fields.push(Value::Binary(r.to_vec()));
        }
        Frame {
            kind: TYPE_SASL,
            channel: 0,
            body: BytesMut::from(&encode_value(&Value::described(SASL_INIT, fields))[..]),
        }
    }

    #[test]
    fn mechanisms_are_checked() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let policies = vec![AccessPolicy {
            name: "iothubowner".into(),
            primary_key: key.into(),
            secondary_key: None,
        }];
        let ok = on_init(&init("MSSBCBS", None), &policies, "h", 0).unwrap();
        assert_eq!(ok.mechanism, "MSSBCBS");
        assert!(
            on_init(&init("EXTERNAL", None), &policies, "h", 0)
                .unwrap_err()
                .contains("EXTERNAL")
        );
        let token = crate::iothub::sas::token("h", key, Some("iothubowner"), 5_000).unwrap();
        let plain = format!("\0iothubowner@sas.root.h\0{token}");
        let ok = on_init(&init("PLAIN", Some(plain.as_bytes())), &policies, "h", 0).unwrap();
        assert_eq!(ok.grant, Some(("h".into(), 5_000)));
        assert!(on_init(&init("PLAIN", Some(b"\0u\0wrong")), &policies, "h", 0).is_err());
    }
}

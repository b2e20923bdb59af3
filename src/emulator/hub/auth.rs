//! Who may connect, decided at CONNECT as IoT Hub does (reference §1.3, §2): the TLS layer only
//! asks for a client certificate and checks the handshake signature (proof of key possession,
//! [`crate::emulator::tls::RequestClientCert`]); the chain, the common name and the registry are
//! checked against the CONNECT packet.

use std::sync::Arc;

use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::state::HubState;
use crate::iothub::registry::{AuthenticationType, DeviceStatus, SymmetricKey, X509Thumbprint};
use crate::iothub::sas::SasRefusal;
use crate::sync::{lock, read, write};

/// Adds a verified CA to the hub's trust.
pub(super) fn trust(state: &HubState, der: CertificateDer<'static>) {
    let mut trust = write(&state.trust);
    if !trust.roots.contains(&der) {
        trust.roots.push(der);
        trust.verifier = verifier_for(&trust.roots);
    }
}

/// Why CONNECT was refused, for counting; the device only ever sees the CONNACK code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ConnectReturnCode,
    pub reason: &'static str,
}

fn refuse(reason: &'static str) -> Refused {
    Refused {
        code: ConnectReturnCode::NotAuthorized,
        reason,
    }
}

/// The device a CONNECT may act as, the serial of the certificate it used, if any, and when the
/// SAS token it used expires (Unix seconds), if it used one: the session ends then.
pub(super) struct Admitted {
    pub device_id: String,
    pub cert_serial: Option<String>,
    pub token_expiry: Option<u64>,
}

pub(super) fn authorize(
    state: &HubState,
    connect: &Connect,
    peer: Option<&[CertificateDer<'static>]>,
) -> Result<Admitted, Refused> {
    let id = connect.client_id.as_str();
    if id.is_empty() {
        return Err(refuse("empty client id"));
    }
    let login = connect.login.as_ref().ok_or(refuse("no username"))?;
    check_username(&state.host_name, id, &login.username)?;

    let (status, auth) = {
        let devices = lock(&state.devices);
        let device = devices.get(id).ok_or(refuse("device not registered"))?;
        (device.status, device.authentication.clone())
    };
    if status == DeviceStatus::Disabled {
        return Err(Refused {
            code: state.disabled_connack,
            reason: "device disabled",
        });
    }
    match auth.kind {
        AuthenticationType::CertificateAuthority => certificate_authority(state, id, peer),
        AuthenticationType::SelfSigned => self_signed(&auth.x509_thumbprint, id, peer),
        AuthenticationType::Sas => sas(state, id, &auth.symmetric_key, &login.password),
        AuthenticationType::None => Err(refuse("device has no authentication")),
    }
}

/// The chain the client presented in the TLS handshake (leaf first).
fn client_chain<'a>(
    peer: Option<&'a [CertificateDer<'static>]>,
) -> Result<&'a [CertificateDer<'static>], Refused> {
    peer.filter(|c| !c.is_empty())
        .ok_or(refuse("no client certificate"))
}

/// A CA-signed device: its chain ends at an uploaded (verified) CA and its CN is the device id.
fn certificate_authority(
    state: &HubState,
    id: &str,
    peer: Option<&[CertificateDer<'static>]>,
) -> Result<Admitted, Refused> {
    let certs = client_chain(peer)?;
    let verifier = read(&state.trust).verifier.clone();
    let verifier = verifier.ok_or(refuse("no CA uploaded"))?;
    verifier
        .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
        .map_err(|_| refuse("certificate chain not trusted or not valid now"))?;
    let info =
        crate::crypto::CertInfo::parse(&certs[0]).map_err(|_| refuse("unreadable certificate"))?;
    if info.subject_cn.as_deref() != Some(id) {
        return Err(refuse("certificate CN differs from the client id"));
    }
    Ok(Admitted {
        device_id: id.into(),
        cert_serial: Some(info.serial_hex),
        token_expiry: None,
    })
}

/// A self-signed device: its certificate's SHA-1 or SHA-256 thumbprint is one the registry holds.
fn self_signed(
    thumbprints: &X509Thumbprint,
    id: &str,
    peer: Option<&[CertificateDer<'static>]>,
) -> Result<Admitted, Refused> {
    let certs = client_chain(peer)?;
    let sha1 = crate::crypto::sha1_thumbprint(&certs[0]);
    let sha256 = crate::crypto::hex_upper(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &certs[0]).as_ref(),
    );
    let matches = [
        &thumbprints.primary_thumbprint,
        &thumbprints.secondary_thumbprint,
    ]
    .into_iter()
    .flatten()
    .any(|p| p.eq_ignore_ascii_case(&sha1) || p.eq_ignore_ascii_case(&sha256));
    if !matches {
        return Err(refuse("thumbprint does not match"));
    }
    let serial = crate::crypto::CertInfo::parse(&certs[0])
        .ok()
        .map(|i| i.serial_hex);
    Ok(Admitted {
        device_id: id.into(),
        cert_serial: serial,
        token_expiry: None,
    })
}

/// A SAS device: the password is a token for `{host}/devices/{id}` (or a prefix of it by
/// segment), signed with one of the device's keys (no `skn`), or with the hub's shared access
/// policy (`skn` naming it: `iothubowner` holds DeviceConnect, so IoT Hub takes its tokens for any
/// device). Expired means `se` is past: no clock skew, since the hub drops a session when its
/// token's `se` passes ([`Admitted::token_expiry`]) and a token it took must not already be past.
fn sas(
    state: &HubState,
    id: &str,
    keys: &SymmetricKey,
    password: &str,
) -> Result<Admitted, Refused> {
    let token = crate::iothub::sas::parse(password).ok_or(refuse("password is not a SAS token"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if token.expiry <= now {
        return Err(refuse("SAS token expired"));
    }
    let resource = format!("{}/devices/{id}", state.host_name);
    let signers: Vec<&String> = match token.policy.as_deref() {
        None => [&keys.primary_key, &keys.secondary_key]
            .into_iter()
            .flatten()
            .collect(),
        Some(policy) if policy == state.policy_name => vec![&state.policy_key],
        Some(_) => return Err(refuse("SAS token names an unknown policy")),
    };
    let mut refusal = refuse("SAS token refused: the device has no keys");
    for key in signers {
        match crate::iothub::sas::verify(&token, key, &resource, now) {
            Ok(()) => {
                return Ok(Admitted {
                    device_id: id.into(),
                    cert_serial: None,
                    token_expiry: Some(token.expiry),
                });
            }
            Err(SasRefusal::WrongResource) => refusal = refuse("SAS token is for another resource"),
            Err(_) => refusal = refuse("SAS token signature does not match the device's keys"),
        }
    }
    Err(refusal)
}

/// `{host}/{id}/?api-version=...`; other query parameters are ignored.
fn check_username(host: &str, id: &str, username: &str) -> Result<(), Refused> {
    let (path, query) = username
        .split_once("/?")
        .ok_or(refuse("username has no api-version"))?;
    let (user_host, user_id) = path
        .split_once('/')
        .ok_or(refuse("username is not host/device"))?;
    if !user_host.eq_ignore_ascii_case(host) {
        return Err(refuse("username names another hub"));
    }
    if user_id != id {
        return Err(refuse("username names another device"));
    }
    if !query
        .split('&')
        .any(|p| p.starts_with("api-version=") && p.len() > "api-version=".len())
    {
        return Err(refuse("username has no api-version"));
    }
    Ok(())
}

/// Builds the chain verifier for the uploaded CAs.
pub(super) fn verifier_for(
    roots: &[CertificateDer<'static>],
) -> Option<Arc<dyn ClientCertVerifier>> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).ok()?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_must_name_this_hub_and_device() {
        let ok = |u| check_username("hub.azure-devices.net", "d1", u).is_ok();
        assert!(ok("hub.azure-devices.net/d1/?api-version=2021-04-12"));
        assert!(ok(
            "HUB.azure-devices.net/d1/?api-version=2020-09-30&DeviceClientType=c%2F1"
        ));
        assert!(!ok("other.azure-devices.net/d1/?api-version=2021-04-12"));
        assert!(!ok("hub.azure-devices.net/d2/?api-version=2021-04-12"));
        assert!(!ok("hub.azure-devices.net/d1/"));
        assert!(!ok("hub.azure-devices.net/d1/?api-version="));
    }
}

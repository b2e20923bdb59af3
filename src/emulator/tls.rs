//! TLS plumbing the emulators share: a throwaway PKI for their server certificates, the HTTPS
//! server configuration and an axum router served over tokio-rustls on the shared accept loop
//! ([`super::listener`]), and the server config of the MQTT endpoints, which ask for a client
//! certificate but leave trust to CONNECT ([`RequestClientCert`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_util::sync::CancellationToken;

use super::error::EmulatorError;
use super::listener::{Listener, ListenerCounters};
use tokio::net::TcpListener;

/// A root that signs the emulators' server certificates. Clients of an embedded run trust it.
pub struct ServerPki {
    root: rcgen::Certificate,
    root_key: KeyPair,
    root_params: CertificateParams,
}

/// A server certificate chain and its key.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ServerPki {
    pub fn new(name: &str) -> Result<Self, EmulatorError> {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} TLS root"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "fleetsim emulator");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(30 * 86_400);
        let root = params.self_signed(&root_key)?;
        Ok(Self {
            root,
            root_key,
            root_params: params,
        })
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.der().clone()
    }

    /// A server certificate for the address `listener` is bound to and `names`.
    pub fn issue_for(
        &self,
        listener: &TcpListener,
        names: &[&str],
    ) -> Result<ServerIdentity, EmulatorError> {
        let ip = listener.local_addr()?.ip().to_string();
        let all: Vec<String> = std::iter::once(ip)
            .chain(names.iter().map(|n| n.to_string()))
            .collect();
        self.issue_server(&all)
    }

    /// A server certificate for `names` (DNS names and IP literals), signed by the root.
    pub fn issue_server(&self, names: &[String]) -> Result<ServerIdentity, EmulatorError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(30 * 86_400);
        let issuer = rcgen::Issuer::from_params(&self.root_params, &self.root_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone(), self.root_der()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

/// A rustls server config with HTTP/2 and HTTP/1.1 offered by ALPN.
pub fn https_config(identity: ServerIdentity) -> Result<Arc<ServerConfig>, EmulatorError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Requests a client certificate and verifies the handshake signature made with its key, but
/// accepts any chain: IoT Hub and DPS decide trust later (at CONNECT, or at the registration), so
/// a refusal is an MQTT answer rather than a TLS alert.
#[derive(Debug)]
pub struct RequestClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl RequestClientCert {
    pub fn new() -> Self {
        Self {
            algorithms: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms,
        }
    }
}

impl Default for RequestClientCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls server config for an MQTT endpoint: `identity` as the server, a client certificate
/// requested ([`RequestClientCert`]).
pub fn client_cert_config(identity: ServerIdentity) -> Result<Arc<ServerConfig>, EmulatorError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(RequestClientCert::new()))
        .with_single_cert(identity.chain, identity.key)?;
    Ok(Arc::new(config))
}

/// Serves `router` over HTTPS on `listener` in a task, until `shutdown`: with a server certificate
/// from `pki` for the listener's address and `names`, counting into `counters`.
pub fn spawn_https(
    listener: TcpListener,
    pki: &ServerPki,
    names: &[&str],
    counters: Arc<ListenerCounters>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
    let identity = pki.issue_for(&listener, names)?;
    let listener = Listener::new(listener, https_config(identity)?).counting(counters);
    Ok(tokio::spawn(serve_https(listener, router, shutdown)))
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, through the emulators'
/// one accept loop ([`Listener`]): on shutdown, a request in flight is finished and the
/// connection closed.
pub async fn serve_https(
    listener: Listener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    listener
        .serve(shutdown, move |tls, closing| {
            serve_http(tls, router.clone(), closing)
        })
        .await;
}

/// HTTP/1.1 or HTTP/2 (by ALPN) on one TLS connection, until the client closes it or `closing`.
async fn serve_http<S>(tls: S, router: axum::Router, closing: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = closing.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

//! `fleetsim hub upload-ca`: uploads a CA certificate to the scenario's hub and proves
//! possession of its key (IoT Hub's verification: a certificate for the hub's code, signed by
//! the CA), so devices whose chains end at it may connect with CA-signed authentication. The
//! proof is signed with the CA's key given here (`--key`) or, for a CA whose key stays in EZCA
//! (`--ezca`), issued by EZCA itself: a certificate for the code, as any device gets one.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::scenario::{self, Target};

#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Upload a CA certificate and verify it with the CA's key (proof of possession).
    UploadCa(UploadCaArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["key", "ezca"])))]
pub struct UploadCaArgs {
    /// The scenario whose hub it is (`iothub.management_url` and credentials).
    #[arg(long)]
    pub scenario: PathBuf,
    /// The certificate's name in the hub.
    #[arg(long)]
    pub name: String,
    /// The CA certificate (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// The CA's private key (PKCS#8 PEM), which signs the verification certificate; it never
    /// leaves this process.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The CA's key stays in EZCA (the scenario's `ezca` CA): EZCA issues the verification
    /// certificate (its domain is the verification code) for a key made here, and revokes it
    /// once the hub has checked it. `--cert` must then be the CA that signs EZCA's leaves (its
    /// issuing CA), not the root above it.
    #[arg(long)]
    pub ezca: bool,
}

pub async fn main(command: &HubCommand) -> anyhow::Result<ExitCode> {
    match command {
        HubCommand::UploadCa(args) => upload_ca(args).await,
    }
}

async fn upload_ca(args: &UploadCaArgs) -> anyhow::Result<ExitCode> {
    let scenario = scenario::load(&args.scenario)?;
    let Target::Remote(remote) = &scenario.target.value else {
        anyhow::bail!("the embedded hub trusts its own CA already; upload-ca is for remote hubs");
    };
    let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("{}", p.display()));
    let cert_pem = read(&args.cert)?;
    let key_pem = args.key.as_ref().map(read).transpose()?;
    let admin = crate::fleet::target::hub_admin(&remote.iothub)?;
    let management = admin
        .management
        .as_ref()
        .context("set iothub.management_url in the scenario: CAs are uploaded through the hub's Azure resource")?;
    let uploaded = management.upload_ca(&args.name, &cert_pem).await?;
    println!(
        "uploaded {} (subject {}, thumbprint {})",
        args.name,
        uploaded.properties.subject.as_deref().unwrap_or("?"),
        uploaded.properties.thumbprint.as_deref().unwrap_or("?")
    );
    if uploaded.properties.is_verified {
        println!("verified already");
        return Ok(ExitCode::SUCCESS);
    }
    let (code, etag) = management
        .verification_code(&args.name, &uploaded.etag)
        .await?;
    println!("verification code {code}");
    let (proof, issued_by_ezca) = match &key_pem {
        Some(key_pem) => (
            crate::crypto::verification::verification_certificate(&cert_pem, key_pem, &code)
                .context("signing the verification certificate with the CA's key")?,
            None,
        ),
        None => {
            let (pem, ca) = ezca_verification_certificate(remote, &code).await?;
            (pem, Some(ca))
        }
    };
    let verified = management.verify(&args.name, &etag, &proof).await;
    if let Some(ca) = &issued_by_ezca {
        revoke_proof(ca, &proof).await;
    }
    let verified = verified.with_context(|| match issued_by_ezca {
        Some(_) => format!(
            "EZCA issued the verification certificate, but the hub did not accept it: is {} the \
             CA that signs EZCA's certificates (its issuing CA, not the root above it)?",
            args.cert.display()
        ),
        None => "the hub did not accept the verification certificate".into(),
    })?;
    anyhow::ensure!(
        verified.properties.is_verified,
        "the hub answered but does not call {} verified",
        args.name
    );
    println!(
        "verified: devices whose chains end at {} may connect",
        args.name
    );
    Ok(ExitCode::SUCCESS)
}

/// A verification certificate for `code` issued by the scenario's EZCA CA, whose key never
/// leaves EZCA: the code is registered as a domain (EZCA's unit of authorisation) and a
/// certificate with CN = code is requested for a key made here, as a device's would be.
async fn ezca_verification_certificate(
    remote: &crate::scenario::RemoteTarget,
    code: &str,
) -> anyhow::Result<(String, crate::device::adapters::EzcaCa)> {
    use crate::ezca::models::CertificateCreateRequest;
    let client = crate::fleet::target::ezca_client(remote)?;
    let ca = crate::device::adapters::EzcaCa::discover_by(
        client,
        remote.ezca.ca_id.as_deref(),
        remote.ezca.ca_key_type.as_deref(),
    )
    .await
    .context("finding the CA at EZCA")?;
    ca.client
        .register_new_domain(&ca.ca, code, &ca.owner)
        .await
        .with_context(|| format!("registering the verification code {code} as a domain at EZCA"))?;
    let key = crate::crypto::DeviceKey::generate(crate::crypto::KeyKind::P256)?;
    let request = CertificateCreateRequest::for_device(&ca.ca, code, key.csr_pem(code)?, 1);
    let leaf = ca
        .client
        .request_ssl_certificate(&request)
        .await
        .context("EZCA issuing the verification certificate")?;
    let pem = crate::crypto::cert_to_pem(&leaf);
    println!("EZCA issued the verification certificate for {code}");
    Ok((pem, ca))
}

/// Revokes the EZCA-issued verification certificate: it has done its job, and nothing should
/// hold a live certificate for the code. A failure is only reported.
async fn revoke_proof(ca: &crate::device::adapters::EzcaCa, pem: &str) {
    let thumbprint = crate::crypto::certs_from_pem(pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|leaf| crate::crypto::sha1_thumbprint(&leaf));
    let Some(thumbprint) = thumbprint else {
        return;
    };
    match ca.client.revoke_certificate_v2(&ca.ca, &thumbprint).await {
        Ok(()) => println!("revoked the verification certificate at EZCA ({thumbprint})"),
        Err(e) => eprintln!(
            "fleetsim: could not revoke the verification certificate {thumbprint} at EZCA: {e}; \
             revoke it in EZCA's portal"
        ),
    }
}

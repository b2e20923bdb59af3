//! `fleetsim hub upload-ca`: uploads a CA certificate to the scenario's hub and proves
//! possession of its key (IoT Hub's verification: a certificate for the hub's code, signed by
//! the CA), so devices whose chains end at it may connect with CA-signed authentication.

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
    pub key: PathBuf,
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
    let (cert_pem, key_pem) = (read(&args.cert)?, read(&args.key)?);
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
    let proof = crate::crypto::verification::verification_certificate(&cert_pem, &key_pem, &code)
        .context("signing the verification certificate with the CA's key")?;
    let verified = management.verify(&args.name, &etag, &proof).await?;
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

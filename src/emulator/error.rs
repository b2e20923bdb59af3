//! Why an emulator could not start.

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Setup(String),
}

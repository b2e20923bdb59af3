//! The EZCA side of the wire as a client sees it: request models ([`models`], exact JSON names),
//! an HTTP client ([`Client`]) with one method per endpoint the IoT samples and official clients
//! call (the certificate-JWT ones in `certauth`), the official clients' retry policy ([`retry`]),
//! and Azure AD token sources ([`aad`]). Tokens are never logged.

pub mod aad;
mod certauth;
pub mod client;
mod error;
pub mod models;
pub mod retry;

pub use certauth::parse_maybe_string_wrapped;
pub use client::{Client, StaticToken, TokenSource};
pub use error::EzcaError;
pub use retry::{RetryObserver, RetryPolicy};

//! Why a report could not be written, read or merged, and the schema version a reader accepts.

/// The JSON report's `schema` value. Bump it when a field changes meaning or goes away; adding a
/// field with a default does not need a bump.
pub const SCHEMA: &str = "fleetsim.report/v1";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode report: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot read report {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a fleetsim report: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: report schema {found:?} is not supported (expected {SCHEMA:?})")]
    Schema { path: String, found: String },
    #[error("histogram: {0}")]
    Histogram(String),
    #[error("{0}")]
    Threshold(String),
    #[error("no reports to merge: {0}")]
    NoReports(String),
}

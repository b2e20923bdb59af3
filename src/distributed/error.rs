//! What goes wrong between the shards of a distributed run and their collector. A leaf: the
//! other files of `distributed` import it.

#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error("report: {0}")]
    Report(#[from] crate::report::ReportError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("--report-to {url}: {reason}")]
    Delivery { url: String, reason: String },
    #[error("collector: {0}")]
    Collector(String),
}

impl DistributedError {
    pub(super) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

//! The retry policy of EZCA's official clients: a failed call is tried again after 2 s, 4 s and
//! 8 s when the network failed, the call timed out, or EZCA answered 408, 500, 502, 503 or 504
//! (reference §2, Polly in `HttpService.cs`). 429 is left to the caller, which honours
//! `Retry-After`. Every retry is reported to an observer, so a run can count them: a CA that only
//! succeeds on the third try is slow, and the report should say so rather than hide it in latency.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::error::EzcaError;

/// Called before each retry with the endpoint (e.g. `RequestSSLCertificate`) and the reason
/// (the failure's kind, e.g. `http_503`, `timeout`).
pub type RetryObserver = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// How long to wait before each retry; no delays means no retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    /// The official clients' 2 s, 4 s, 8 s.
    fn default() -> Self {
        Self {
            delays: [2, 4, 8].map(Duration::from_secs).to_vec(),
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        Self { delays: Vec::new() }
    }
}

/// Whether the official clients retry this failure.
pub fn retried(e: &EzcaError) -> bool {
    match e {
        EzcaError::Transport(_) | EzcaError::Timeout => true,
        EzcaError::Status { status, .. } => matches!(status, 408 | 500 | 502 | 503 | 504),
        _ => false,
    }
}

/// Runs `call` and retries it under `policy`. `call` builds its request anew each time, so a
/// certificate-JWT gets a fresh `jti` (EZCA refuses a replayed one).
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    observer: Option<&RetryObserver>,
    endpoint: &str,
    mut call: F,
) -> Result<T, EzcaError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EzcaError>>,
{
    let mut delays = policy.delays.iter();
    loop {
        match call().await {
            Err(e) if retried(&e) => match delays.next() {
                Some(delay) => {
                    if let Some(observe) = observer {
                        observe(endpoint, &e.kind());
                    }
                    tracing::debug!(endpoint, error = %e, ?delay, "EZCA call failed; retrying");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// The endpoint name of an API path: its last segment (`api/CA/RegisterNewDomain` →
/// `RegisterNewDomain`).
pub fn endpoint_of(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn status(status: u16) -> EzcaError {
        EzcaError::Status {
            status,
            body: String::new(),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_after_the_official_delays_and_reports_each() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let observer: RetryObserver = Arc::new(move |endpoint: &str, reason: &str| {
            log.lock().unwrap().push(format!("{endpoint} {reason}"));
        });
        let tries = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let result = with_retries(&RetryPolicy::default(), Some(&observer), "Req", || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(status(503)),
                    1 => Err(EzcaError::Timeout),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(start.elapsed(), Duration::from_secs(6), "2 s then 4 s");
        assert_eq!(*seen.lock().unwrap(), ["Req http_503", "Req timeout"]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_delay_and_never_retries_refusals_or_429() {
        let tries = AtomicU32::new(0);
        let result: Result<(), _> = with_retries(&RetryPolicy::default(), None, "R", || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err(status(502)) }
        })
        .await;
        assert!(matches!(result, Err(EzcaError::Status { status: 502, .. })));
        assert_eq!(
            tries.load(Ordering::SeqCst),
            4,
            "first try and three retries"
        );

        for e in [status(429), status(400), EzcaError::Refused("no".into())] {
            let tries = AtomicU32::new(0);
            let kind = e.kind();
            let mut e = Some(e);
            let _ = with_retries::<(), _, _>(&RetryPolicy::default(), None, "R", || {
                tries.fetch_add(1, Ordering::SeqCst);
                let e = e.take();
                async move { Err(e.unwrap_or(EzcaError::Timeout)) }
            })
            .await;
            assert_eq!(tries.load(Ordering::SeqCst), 1, "{kind} is not retried");
        }
    }

    #[test]
    fn endpoint_names_are_the_last_path_segment() {
        assert_eq!(endpoint_of("api/CA/RegisterNewDomain"), "RegisterNewDomain");
        assert_eq!(
            endpoint_of("api/Certificates/RenewCertificateV2/"),
            "RenewCertificateV2"
        );
    }
}

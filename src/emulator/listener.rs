//! The one accept loop every emulator server runs (the CA's and the registry's HTTPS, the hub's
//! MQTT over TLS and over WebSocket), with one drain policy.
//!
//! It accepts on a bound listener until the shutdown future completes. Each connection's TLS
//! handshake runs in that connection's own task under a timeout, so a slow or silent client holds
//! up no one; connections live in a `JoinSet` that is reaped as they finish. Accept errors
//! (usually EMFILE: out of file descriptors) back off instead of spinning. On shutdown it stops
//! accepting, tells the open connections to wind down (the `closing` token their handler gets:
//! HTTP finishes the request in flight, MQTT ends the session), gives them a bounded grace period
//! and aborts whatever is left. Refused handshakes, accept errors and panicking connections are
//! counted in [`ListenerCounters`], which the emulators report in their stats.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::ServerConfig;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How a server treats its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The longest a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long open connections get to finish after shutdown before they are aborted.
    pub grace: Duration,
    /// The pause after a failed accept (EMFILE and the like) before accepting again.
    pub accept_backoff: Duration,
    /// Connections served at once; past it, new ones wait in the kernel's backlog until one
    /// ends (a flood of idle connections cannot take every file descriptor).
    pub max_connections: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            grace: Duration::from_secs(3),
            accept_backoff: Duration::from_millis(50),
            // Above the ~28k devices one loopback address can carry (several hub addresses
            // each have their own listener), below the process's 20k..1M descriptor limits.
            max_connections: 65_536,
        }
    }
}

/// What the accept loops of one emulator saw; shared by all its listeners.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    accepted: AtomicU64,
    handshakes_failed: AtomicU64,
    accept_errors: AtomicU64,
    panics: AtomicU64,
}

/// A copy of [`ListenerCounters`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ListenerStats {
    /// TCP connections accepted.
    pub accepted: u64,
    /// TLS handshakes that failed or timed out (the connection was closed).
    pub handshakes_failed: u64,
    /// Failed accepts (e.g. out of file descriptors).
    pub accept_errors: u64,
    /// Connections whose handler panicked (the server carried on).
    pub panics: u64,
}

impl ListenerCounters {
    pub fn snapshot(&self) -> ListenerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerStats {
            accepted: get(&self.accepted),
            handshakes_failed: get(&self.handshakes_failed),
            accept_errors: get(&self.accept_errors),
            panics: get(&self.panics),
        }
    }
}

/// A bound TCP listener with the TLS configuration its connections get.
pub struct Listener {
    tcp: TcpListener,
    tls: TlsAcceptor,
    policy: Policy,
    counters: Arc<ListenerCounters>,
}

impl Listener {
    pub fn new(tcp: TcpListener, tls: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            tls: TlsAcceptor::from(tls),
            policy: Policy::default(),
            counters: Arc::default(),
        }
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Counts into `counters` (shared with the emulator's other listeners).
    pub fn counting(mut self, counters: Arc<ListenerCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Accepts until `shutdown` completes, running `handle` on each connection once its TLS
    /// handshake is done; then drains (see the module doc). `handle` gets the `closing` token,
    /// cancelled when the server starts draining.
    pub async fn serve<H, F>(self, shutdown: impl Future<Output = ()> + Send, handle: H)
    where
        H: Fn(TlsStream<TcpStream>, CancellationToken) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            tcp,
            tls,
            policy,
            counters,
        } = self;
        let handle = Arc::new(handle);
        let closing = CancellationToken::new();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let at_cap = connections.len() >= policy.max_connections;
            let stream = tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    count_panic(&counters, done);
                    continue;
                }
                accepted = tcp.accept(), if !at_cap => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "accept failed; backing off");
                        tokio::time::sleep(policy.accept_backoff).await;
                        continue;
                    }
                },
            };
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            let (tls, counters, closing, handle) = (
                tls.clone(),
                counters.clone(),
                closing.clone(),
                handle.clone(),
            );
            connections.spawn(async move {
                let _ = stream.set_nodelay(true);
                let handshake = tokio::time::timeout(policy.handshake_timeout, tls.accept(stream));
                let stream = tokio::select! {
                    _ = closing.cancelled() => return,
                    done = handshake => match done {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(_)) | Err(_) => {
                            counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                };
                handle(stream, closing).await;
            });
        }
        // Stop accepting: the kernel refuses new connections from here on.
        drop(tcp);
        drain(connections, &closing, policy.grace, &counters).await;
    }
}

fn count_panic(counters: &ListenerCounters, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        counters.panics.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "a connection's handler panicked");
    }
}

/// Tells the open connections to wind down, waits up to `grace` for them, aborts the rest.
async fn drain(
    mut connections: JoinSet<()>,
    closing: &CancellationToken,
    grace: Duration,
    counters: &ListenerCounters,
) {
    closing.cancel();
    let all_done = tokio::time::timeout(grace, async {
        while let Some(done) = connections.join_next().await {
            count_panic(counters, done);
        }
    })
    .await
    .is_ok();
    if !all_done {
        tracing::debug!(
            open = connections.len(),
            "connections still open after the grace period: aborted"
        );
        connections.shutdown().await;
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;

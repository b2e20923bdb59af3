//! Restarting the hub in the middle of a run (a scenario's `restart_hub` fault), and the other
//! faults as the assembly of emulators offers them ([`Emulators::drop_connections`] and the like).
//!
//! Each of the hub's device endpoints (MQTT over TLS, every extra MQTT address, MQTT over
//! WebSocket) is served by a [`supervise`] task that can be told to restart: it stops its accept
//! loop (which ends the live sessions), so the port is closed and a device's connect is refused,
//! waits out the downtime and binds the same address again. The hub's state (registry, twins,
//! counters, queues) stays in memory, as `fleetsim emulate --state` keeps it across a real
//! restart; the registry REST API and the AMQP endpoint stay up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{EmulatorError, Emulators, HubEmulator, ServerPki};

/// Which of the hub's device endpoints a supervisor serves.
#[derive(Debug, Clone, Copy)]
pub(super) enum Endpoint {
    MqttTls,
    WebSocket,
}

/// Serves `endpoint` of `hub` on `listener` until `stop`, going down for the time each message
/// on `restarts` says and coming back on the same address.
pub(super) fn supervise(
    hub: HubEmulator,
    pki: Arc<ServerPki>,
    endpoint: Endpoint,
    listener: TcpListener,
    stop: CancellationToken,
    mut restarts: broadcast::Receiver<Duration>,
) -> Result<tokio::task::JoinHandle<()>, EmulatorError> {
    let addr = listener.local_addr()?;
    let serve = move |listener: TcpListener, round: &CancellationToken| {
        let round = round.clone();
        let shutdown = async move { round.cancelled().await };
        match endpoint {
            Endpoint::MqttTls => hub.serve_mqtt(listener, &pki, shutdown),
            Endpoint::WebSocket => hub.serve_websocket(listener, &pki, shutdown),
        }
    };
    let mut round = stop.child_token();
    let mut task = serve(listener, &round)?;
    Ok(tokio::spawn(async move {
        loop {
            let down = tokio::select! {
                _ = stop.cancelled() => break,
                r = restarts.recv() => match r {
                    Ok(down) => down,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            round.cancel();
            let _ = (&mut task).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(down) => {}
            }
            let Some(listener) = rebind(addr, &stop).await else {
                return;
            };
            round = stop.child_token();
            task = match serve(listener, &round) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(%addr, error = %e, "the hub could not serve again after a restart");
                    return;
                }
            };
            tracing::info!(%addr, ?down, "hub endpoint back after a restart");
        }
        let _ = task.await;
    }))
}

/// Binds `addr` again, retrying briefly (the old socket may take a moment to go).
async fn rebind(addr: SocketAddr, stop: &CancellationToken) -> Option<TcpListener> {
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) => tracing::debug!(%addr, error = %e, "rebinding after a restart"),
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    tracing::error!(%addr, "the hub's address stayed taken after a restart");
    None
}

impl Emulators {
    /// Every hub of the run, the first one first.
    fn all_hubs(&self) -> impl Iterator<Item = &HubEmulator> {
        std::iter::once(&self.hub).chain(self.extra_hubs.iter().map(|x| &x.hub))
    }

    /// Closes `share` (0..=1) of the live device connections of every hub; returns how many it
    /// closed and how many were live.
    pub fn drop_connections(&self, share: f64, rng: &mut impl Rng) -> (usize, usize) {
        self.all_hubs()
            .map(|h| h.drop_connections(share, rng))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// Every hub answers CONNECTs with CONNACK 3 for `lasting`.
    pub fn refuse_connects_for(&self, lasting: Duration) {
        self.all_hubs().for_each(|h| h.refuse_connects_for(lasting));
    }

    /// Every hub holds PUBACKs back by `delay` for `lasting`.
    pub fn delay_pubacks_for(&self, delay: Duration, lasting: Duration) {
        self.all_hubs()
            .for_each(|h| h.delay_pubacks_for(delay, lasting));
    }

    /// The CA answers 503 for `lasting`.
    pub fn ca_unavailable_for(&self, lasting: Duration) {
        self.ca.unavailable_for(lasting);
    }

    /// Takes the first hub's device endpoints down for `down` (its live connections end, its
    /// ports close) and brings them back on the same addresses, state kept. Returns how many
    /// connections were live when it went down.
    pub fn restart_hub(&self, down: Duration) -> usize {
        let live = self.hub.drop_all_connections();
        let _ = self.restarts.send(down);
        live
    }
}

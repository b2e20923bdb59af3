//! Restartable device endpoints of the hub (a scenario's `restart_hub` fault). Each of them
//! (MQTT over TLS, every extra MQTT address, MQTT over WebSocket) is served by a [`supervise`]
//! task that can be told to restart: it stops its accept loop (which ends the live sessions), so
//! the port is closed and a device's connect is refused, waits out the downtime and binds the same
//! address again. The hub's state (registry, twins, counters, queues) stays in memory, as
//! `fleetsim emulate --state` keeps it across a real restart; the registry REST API and the AMQP
//! endpoint stay up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::error::EmulatorError;
use super::hub::HubEmulator;
use super::tls::ServerPki;

/// Which of the hub's device endpoints a supervisor serves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    MqttTls,
    WebSocket,
}

/// Serves `endpoint` of `hub` on `listener` until `stop`, going down for the time each message
/// on `restarts` says and coming back on the same address.
pub(crate) fn supervise(
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

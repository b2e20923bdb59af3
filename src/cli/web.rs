//! `--web ADDR`: the live page of `fleetsim run` and the replay of `fleetsim report --web`
//! (see [`crate::web`]). An address without a host is on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::report;
use crate::web::{Replay, WebView};

/// What a run serves while it runs: Prometheus metrics (`--metrics-addr`) and the live page
/// (`--web`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoints {
    pub metrics: Option<SocketAddr>,
    pub web: Option<SocketAddr>,
}

/// `8080` (loopback), `127.0.0.1:8080`, `[::1]:8080` or `0.0.0.0:8080`.
pub fn parse_web_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("`{text}` is neither a port nor an address like 127.0.0.1:8080"))
}

/// Binds the page's listener, warning when it is not loopback.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    if !addr.ip().is_loopback() {
        eprintln!(
            "fleetsim: warning: serving the web view on {addr} (not loopback); anyone who can reach it can watch the run"
        );
    }
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("--web {addr}"))?;
    eprintln!("fleetsim: web view at http://{}/", listener.local_addr()?);
    Ok(listener)
}

/// Serves the replay of the report in `inputs` (exactly one file) until Ctrl-C.
pub async fn replay(inputs: &[PathBuf], addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let [path] = inputs else {
        anyhow::bail!("--web replays one report file, {} given", inputs.len());
    };
    let report = report::read_json(path)?;
    let view = Replay::new(&report).with_context(|| path.display().to_string())?;
    let listener = bind(addr)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    eprintln!("fleetsim: replaying {} (Ctrl-C stops)", path.display());
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::web::serve(listener, WebView::Replay(view), stop).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_port_is_on_loopback() {
        assert_eq!(
            parse_web_addr("8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_web_addr("[::1]:9000").unwrap(),
            "[::1]:9000".parse().unwrap()
        );
        assert!(parse_web_addr("localhost").is_err());
    }
}

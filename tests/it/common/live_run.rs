//! A run watched through its Prometheus metrics, so a test can wait for what it needs (every
//! device online, messages acknowledged) and then stop the run, instead of betting that a fixed
//! duration is long enough on a loaded machine: a `fleetsim run` child ([`LiveRun`], stopped with
//! SIGINT) or a run in the test's process ([`metrics_listener`], [`until_metrics`], for its
//! shutdown future).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Watched;

/// A run started with `--metrics-addr 127.0.0.1:0`, its stdout and stderr read as one stream.
pub struct LiveRun {
    child: Watched,
    lines: mpsc::Receiver<String>,
    /// Everything it printed so far, for failure messages.
    seen: String,
    /// `host:port` of its `/metrics`.
    metrics: String,
}

impl LiveRun {
    /// Spawns `command` (a `fleetsim run …` without `--metrics-addr`) and waits up to `limit` for
    /// it to say where its metrics are.
    pub fn spawn(command: &mut Command, limit: Duration) -> Self {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        command
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("pipe writer"))
            .stderr(writer);
        let child = Watched::spawn(command, "fleetsim run");
        // The command keeps its copies of the writer: replace them, so the pipe closes when the
        // child exits.
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut run = Self {
            child,
            lines,
            seen: String::new(),
            metrics: String::new(),
        };
        let deadline = Instant::now() + limit;
        const MARK: &str = "Prometheus metrics at http://";
        while run.metrics.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = run
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no metrics address within {limit:?}:\n{}", run.seen));
            if let Some(at) = line.find(MARK) {
                let rest = &line[at + MARK.len()..];
                run.metrics = rest.trim_end_matches("/metrics").to_string();
            }
            run.seen.push_str(&line);
            run.seen.push('\n');
        }
        run
    }

    /// What it printed so far.
    pub fn output(&mut self) -> &str {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        &self.seen
    }

    /// Scrapes `/metrics` every 100 ms until `ready` holds for a scrape (given a series' value by
    /// its name and labels, 0 when absent); fails the test past `limit` or if the run ends.
    pub fn wait_for(&mut self, limit: Duration, ready: impl Fn(&dyn Fn(&str) -> f64) -> bool) {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(text) = scrape(&self.metrics) {
                let value = |series: &str| value_of(&text, series);
                if ready(&value) {
                    return;
                }
                last = text;
            }
            assert!(
                !self.child.has_exited(),
                "the run ended first:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "not ready within {limit:?}; last scrape:\n{last}\noutput:\n{}",
            self.output()
        );
    }

    /// SIGINT (what Ctrl-C sends), then waits up to `limit` for the run to write its report and
    /// exit.
    pub fn interrupt(&mut self, limit: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        self.child.wait_within(limit)
    }
}

/// A listener for an in-process run's `RunOptions::metrics_listener`, and its address.
pub fn metrics_listener() -> (std::sync::Arc<std::net::TcpListener>, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a metrics port");
    let addr = listener.local_addr().expect("its address").to_string();
    (std::sync::Arc::new(listener), addr)
}

/// Resolves once a scrape of the run serving metrics at `addr` satisfies `ready` (given a
/// series' value by its name and labels, 0 when absent), scraping every 100 ms: a run's shutdown
/// future. Fails the test past `limit`.
pub async fn until_metrics(
    addr: String,
    limit: Duration,
    ready: impl Fn(&dyn Fn(&str) -> f64) -> bool,
) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let at = addr.clone();
        if let Ok(Some(text)) = tokio::task::spawn_blocking(move || scrape(&at)).await {
            if ready(&|series: &str| value_of(&text, series)) {
                return;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not ready within {limit:?}; last scrape:\n{last}");
}

/// The body of `GET /metrics` at `addr`, or `None` when the request fails.
fn scrape(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.starts_with("HTTP/1.1 200").then_some(text)
}

/// The value of `series` (name and labels exactly as exported) in a scrape, 0 when absent.
fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

//! Child processes, bounded in time: a child that hangs is killed and its test fails with what
//! the child printed, so one silent hang cannot hang the whole suite. Also the scratch
//! directories tests write into and the Python interpreter of the peers' virtualenv.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An empty directory for one test: unique per test process and `name`, emptied first.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// `fleetsim emulate` with every listener on a free port (the CA, the hub's MQTT, WebSocket,
/// registry and AMQP, DPS's MQTT, WebSocket and service), writing its files to `dir`, its banner
/// piped; callers add what else they need.
pub fn emulate_on_free_ports(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    command.arg("emulate");
    for listener in [
        "--ca-port",
        "--mqtt-port",
        "--websocket-port",
        "--registry-port",
        "--amqp-port",
        "--dps-port",
        "--dps-websocket-port",
        "--dps-service-port",
    ] {
        command.args([listener, "0"]);
    }
    command
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// `fleetsim emulate` as Microsoft's SDKs need it (they fix the ports and check the host name):
/// the hub named `host` on `ip`, its REST on 443, MQTT on 8883 and, with `amqp`, AMQP on 5671;
/// the CA and WebSocket on free ports, no DPS. Returns once it is ready.
pub fn emulate_for_sdks(dir: &Path, ip: [u8; 4], host: &str, amqp: bool) -> Watched {
    let ip = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
    let mut command = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    command
        .arg("emulate")
        .args(["--ip", &ip, "--hub-host", host, "--no-dps"])
        .args(["--registry-port", "443", "--mqtt-port", "8883"])
        .args(["--amqp-port", if amqp { "5671" } else { "0" }])
        .args(["--ca-port", "0"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped());
    let mut child = Watched::spawn(&mut command, "fleetsim emulate");
    child.read_until("ready", Duration::from_secs(60));
    child
}

/// The Python of the peers' virtualenv (`target/peers/venv`, made by `./scripts/test`), which has
/// Microsoft's IoT Hub and Event Hubs SDKs installed.
pub fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run ./scripts/test to install the peers (Microsoft's Python SDKs)",
        python.display()
    );
    python
}

/// A child process that is killed when dropped, so a failing test leaves nothing running.
pub struct Watched {
    child: Child,
    what: String,
    /// Lines of the child's stdout, read on a thread (see [`Watched::read_until`]).
    lines: Option<mpsc::Receiver<String>>,
}

impl Watched {
    /// Spawns `command` (named `what` in failures), reading its stdout line by line when it is
    /// piped.
    pub fn spawn(command: &mut Command, what: &str) -> Self {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let lines = child.stdout.take().map(|out| {
            let (send, receive) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
            receive
        });
        Self {
            child,
            what: what.to_string(),
            lines,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stdout up to and including the first line that starts with `prefix`; fails the test if
    /// none comes within `limit` (a silent child included) or stdout closes first.
    pub fn read_until(&mut self, prefix: &str, limit: Duration) -> String {
        let what = self.what.clone();
        let lines = self.lines.as_ref().expect("stdout is piped");
        let deadline = Instant::now() + limit;
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.starts_with(prefix) {
                        return seen;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{what}: no line starting with {prefix:?} within {limit:?}:\n{seen}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{what} closed its output before {prefix:?}:\n{seen}")
                }
            }
        }
    }

    /// Whether the child has exited (by itself or killed).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("child status").is_some()
    }

    /// SIGKILL, and waits for the child to be gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the child");
        self.child.wait().expect("reap the child");
    }

    /// Waits for the child to exit; kills it and fails the test past `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {limit:?}: killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `command` to the end with stdout and stderr captured; kills it and fails the test, with
/// what it printed so far, when it runs longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let what = format!("{:?}", command.get_program());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
            panic!(
                "{what} did not finish within {limit:?}: killed\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

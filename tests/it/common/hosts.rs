//! Host names for Microsoft's SDKs: they dial IoT Hub's and DPS's fixed ports (443, 8883, 5671)
//! by name and check the name against the server certificate, so their tests map a name of
//! their own to a loopback address of their own in `/etc/hosts`.

use std::sync::Mutex;

/// One writer of /etc/hosts at a time (tests run in parallel threads of one process).
static HOSTS: Mutex<()> = Mutex::new(());

/// Maps `name` to `ip` in /etc/hosts, appending the line only if it is missing (idempotent).
/// Fails the test with the line to add by hand when the file cannot be written.
pub fn map_host(name: &str, ip: [u8; 4]) {
    let _one = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    let line = format!("{}.{}.{}.{} {name}", ip[0], ip[1], ip[2], ip[3]);
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let wanted: Vec<&str> = line.split_whitespace().collect();
    if hosts
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == wanted)
    {
        return;
    }
    let mut text = hosts;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    text.push('\n');
    std::fs::write("/etc/hosts", text).unwrap_or_else(|e| {
        panic!("cannot add `{line}` to /etc/hosts ({e}): add it by hand or run the tests as root")
    });
}

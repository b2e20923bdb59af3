//! Commands the fleet sends a running device (revoke your certificate; a SAS device: migrate to
//! a certificate after a delay, which paces a migration), one channel per device. A device that has no channel (tests, a fleet without events) never receives one.

use tokio::sync::watch;

use crate::scenario::RevokeMethod;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    None,
    Revoke(RevokeMethod),
    /// Move from SAS to a CA certificate, starting this long from now.
    Migrate(std::time::Duration),
}

/// The fleet's end of a device's channel.
#[derive(Debug)]
pub struct Outbox(watch::Sender<Command>);

impl Outbox {
    /// Sends `command`; the device sees the latest one when it next listens, even if it was busy
    /// (enrolling, connecting) when it was sent.
    pub fn send(&self, command: Command) {
        self.0.send_replace(command);
    }
}

/// The device's end.
#[derive(Debug, Clone, Default)]
pub struct Inbox(Option<watch::Receiver<Command>>);

/// A connected pair.
pub fn channel() -> (Outbox, Inbox) {
    let (tx, rx) = watch::channel(Command::None);
    (Outbox(tx), Inbox(Some(rx)))
}

impl Inbox {
    /// The next command; never completes without a channel or once the fleet is gone.
    pub async fn next(&mut self) -> Command {
        if let Some(rx) = &mut self.0 {
            if rx.changed().await.is_ok() {
                return *rx.borrow_and_update();
            }
            self.0 = None;
        }
        std::future::pending().await
    }
}

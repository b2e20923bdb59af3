//! What a person watching a run sees while it runs: the live terminal view (ratatui over
//! crossterm) when stdout is a terminal, plain progress lines on stderr otherwise (or with
//! `--no-tui`), nothing with `--quiet`.
//!
//! Both read only the recorder's aggregated [`Snapshot`](crate::metrics::Snapshot), a few times
//! a second, on a thread of their own: their cost does not depend on the number of devices and
//! they never hold up the runtime's workers. [`start`] returns a [`Watcher`]; dropping it stops
//! the display and gives the terminal back, on every way out of the run (end, error, panic).
//!
//! In the live view the terminal is in raw mode, where Ctrl-C is a key press rather than a
//! SIGINT. The view therefore turns Ctrl-C (and `q`) into the run's shutdown itself, through the
//! `quit` token the run gives it, so stopping from the view still drains the devices and writes
//! the report.

mod lines;
mod view;

pub use lines::progress_line;
pub use view::{LiveView, latency};

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio_util::sync::CancellationToken;

use crate::metrics::Recorder;

/// How the run shows its progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Progress {
    /// Nothing (`--quiet`, and library callers by default).
    #[default]
    Off,
    /// A plain line on stderr every few seconds.
    Lines,
    /// The full-screen live view on stdout.
    Live,
}

impl Progress {
    /// The live view when stdout is a terminal, unless `no_tui`; `quiet` silences both.
    pub fn choose(quiet: bool, no_tui: bool) -> Progress {
        Self::choose_for(quiet, no_tui, std::io::stdout().is_terminal())
    }

    /// [`Progress::choose`] for a stdout that is a terminal or not (tests run without one).
    fn choose_for(quiet: bool, no_tui: bool, terminal: bool) -> Progress {
        if quiet {
            Progress::Off
        } else if no_tui || !terminal {
            Progress::Lines
        } else {
            Progress::Live
        }
    }
}

/// What the display needs to know about the run.
pub struct Watch {
    pub recorder: Arc<Recorder>,
    pub title: String,
    pub start: Instant,
    pub duration: Duration,
    pub planned: u64,
    /// Cancelled by the live view on Ctrl-C or `q`: the run's shutdown.
    pub quit: CancellationToken,
}

/// The running display; dropping it stops the display and restores the terminal.
pub struct Watcher {
    /// Dropping the sender is the stop signal (the thread sees the channel disconnect).
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread checks for the stop at least every POLL, so this wait is short.
            let _ = thread.join();
        }
    }
}

/// How often the live view redraws.
const REDRAW: Duration = Duration::from_millis(250);
/// The longest the live view waits for a key before checking for the stop.
const POLL: Duration = Duration::from_millis(50);

/// Starts showing progress in `mode`; `None` for [`Progress::Off`].
pub fn start(mode: Progress, watch: Watch) -> Option<Watcher> {
    let (stop, stopped) = mpsc::channel();
    let body: Box<dyn FnOnce() + Send> = match mode {
        Progress::Off => return None,
        Progress::Lines => Box::new(move || lines_loop(&watch, &stopped)),
        Progress::Live => Box::new(move || {
            if let Err(e) = live_loop(&watch, &stopped) {
                // No usable terminal after all: fall back to lines rather than show nothing.
                eprintln!("fleetsim: live view unavailable ({e}); printing progress lines");
                lines_loop(&watch, &stopped);
            }
        }),
    };
    let thread = std::thread::Builder::new()
        .name("fleetsim-ui".into())
        .spawn(body);
    match thread {
        Ok(thread) => Some(Watcher {
            stop: Some(stop),
            thread: Some(thread),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the progress display");
            None
        }
    }
}

fn lines_loop(watch: &Watch, stopped: &mpsc::Receiver<()>) {
    // On a fixed schedule from the start of the run (5 s, 10 s, ...), so the lines don't drift.
    let mut next = watch.start + lines::EVERY;
    loop {
        match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {
                let line = progress_line(
                    &watch.recorder.snapshot(),
                    watch.start.elapsed(),
                    watch.planned,
                );
                eprintln!("{line}");
                next += lines::EVERY;
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Leaves raw mode and the alternate screen when dropped, whichever way the loop ends.
/// (`ratatui::try_init` also installs a panic hook that does the same before the panic message
/// is printed.)
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn live_loop(watch: &Watch, stopped: &mpsc::Receiver<()>) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let mut view = LiveView::new(&watch.title, watch.duration, watch.planned);
    loop {
        let now = Instant::now();
        view.update(
            &watch.recorder.snapshot(),
            now,
            now.saturating_duration_since(watch.start),
        );
        terminal.draw(|frame| view.render(frame))?;
        let next = now + REDRAW;
        loop {
            match stopped.try_recv() {
                Err(mpsc::TryRecvError::Empty) => {}
                Ok(()) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if event::poll(left.min(POLL))? && wants_quit(&event::read()?) {
                drop(_restore);
                watch.quit.cancel();
                eprintln!(
                    "fleetsim: stopped from the live view, stopping devices and writing the report"
                );
                return Ok(());
            }
        }
    }
}

/// `q`, Esc or Ctrl-C (which raw mode delivers as a key, not as SIGINT).
fn wants_quit(event: &Event) -> bool {
    let Event::Key(key) = event else {
        return false;
    };
    if key.kind != KeyEventKind::Press {
        return false;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Esc => true,
        KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_live_view_only_on_a_terminal_and_only_when_asked() {
        use super::Progress::{self, Lines, Live, Off};
        for quiet in [false, true] {
            for no_tui in [false, true] {
                for terminal in [false, true] {
                    let want = match (quiet, no_tui, terminal) {
                        (true, _, _) => Off,
                        (false, false, true) => Live,
                        _ => Lines,
                    };
                    let got = Progress::choose_for(quiet, no_tui, terminal);
                    assert_eq!(
                        got, want,
                        "quiet {quiet}, no_tui {no_tui}, terminal {terminal}"
                    );
                }
            }
        }
    }

    use super::*;
    use ratatui::crossterm::event::KeyEvent;

    #[test]
    fn ctrl_c_q_and_esc_stop_the_run_other_keys_do_not() {
        let key = |code, modifiers| Event::Key(KeyEvent::new(code, modifiers));
        assert!(wants_quit(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(wants_quit(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(wants_quit(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(!wants_quit(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!wants_quit(&key(KeyCode::Enter, KeyModifiers::NONE)));
    }

    #[test]
    fn quiet_wins_and_no_tui_means_lines() {
        assert_eq!(Progress::choose(true, false), Progress::Off);
        assert_eq!(Progress::choose(true, true), Progress::Off);
        assert_eq!(Progress::choose(false, true), Progress::Lines);
    }
}

//! The on-disk key pool: private keys generated ahead of time (`fleetsim keys generate`) so that a
//! run with `certificate.key_source: pool` does not spend its own CPU on RSA key generation while
//! it measures the CA.
//!
//! Layout: `<root>/<kind>/<slot:08>.pem`, one PKCS#8 PEM key per file, files 0600 and directories
//! 0700. `<root>` is `$FLEETSIM_KEY_DIR`, else `$XDG_CACHE_HOME/fleetsim/keys`, else
//! `~/.cache/fleetsim/keys`. Slot numbers are stable: device index `i` always takes slot `i`, so
//! the same device gets the same key in every run and a pool filled once serves every later run.
//!
//! Generation runs on plain std threads, one per core. Each key is an independent CPU-bound job of
//! 0.05 ms (P-256) to ~1 s (RSA-4096); a shared atomic cursor over the missing slots balances
//! that perfectly, so a work-stealing pool (rayon) would add a dependency and nothing else.
//! Files are written to a temporary name and renamed, so an interrupted run never leaves a
//! truncated key behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{CryptoError, DeviceKey, KeyKind};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no key pool directory: set FLEETSIM_KEY_DIR, XDG_CACHE_HOME or HOME, or pass --dir")]
    NoDirectory,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a usable {kind} key: {message}")]
    BadKey {
        path: PathBuf,
        kind: &'static str,
        message: String,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PoolError + '_ {
    move |source| PoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The pool root from the environment (see the module doc).
pub fn default_dir() -> Result<PathBuf, PoolError> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = absolute("FLEETSIM_KEY_DIR") {
        return Ok(dir);
    }
    // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(cache) = absolute("XDG_CACHE_HOME") {
        return Ok(cache.join("fleetsim").join("keys"));
    }
    absolute("HOME")
        .map(|home| home.join(".cache").join("fleetsim").join("keys"))
        .ok_or(PoolError::NoDirectory)
}

/// A key pool rooted at a directory.
#[derive(Debug, Clone)]
pub struct KeyPool {
    root: PathBuf,
}

/// What [`KeyPool::generate`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generated {
    pub existing: usize,
    pub generated: usize,
    pub elapsed: Duration,
}

/// Progress of a generation, for the caller to display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub elapsed: Duration,
}

impl KeyPool {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn open_default() -> Result<Self, PoolError> {
        default_dir().map(Self::new)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn kind_dir(&self, kind: KeyKind) -> PathBuf {
        self.root.join(kind.name())
    }

    pub fn slot_path(&self, kind: KeyKind, slot: u64) -> PathBuf {
        self.kind_dir(kind).join(format!("{slot:08}.pem"))
    }

    pub fn contains(&self, kind: KeyKind, slot: u64) -> bool {
        self.slot_path(kind, slot).is_file()
    }

    /// How many keys of `kind` the pool holds.
    pub fn count(&self, kind: KeyKind) -> Result<usize, PoolError> {
        let dir = self.kind_dir(kind);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&dir)(e)),
        };
        let mut n = 0;
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            if slot_of(&entry.file_name()).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The slots below `count` that hold no key.
    pub fn missing(&self, kind: KeyKind, count: u64) -> Vec<u64> {
        (0..count).filter(|&s| !self.contains(kind, s)).collect()
    }

    /// Creates the kind's directory (and the root) readable by the owner only.
    fn prepare(&self, kind: KeyKind) -> Result<PathBuf, PoolError> {
        let dir = self.kind_dir(kind);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        #[cfg(unix)]
        for d in [&self.root, &dir] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
                .map_err(io_error(d))?;
        }
        Ok(dir)
    }

    /// Reads the key in `slot`; `None` when the slot is empty.
    pub fn load(&self, kind: KeyKind, slot: u64) -> Result<Option<DeviceKey>, PoolError> {
        let path = self.slot_path(kind, slot);
        let pem = match std::fs::read_to_string(&path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        DeviceKey::from_pkcs8_pem(kind, &pem)
            .map(Some)
            .map_err(|e| PoolError::BadKey {
                path,
                kind: kind.name(),
                message: e.to_string(),
            })
    }

    /// Writes `key` into `slot` (0600, atomically: a temporary file renamed into place).
    pub fn store(&self, slot: u64, key: &DeviceKey) -> Result<(), PoolError> {
        let dir = self.prepare(key.kind())?;
        let path = self.slot_path(key.kind(), slot);
        let tmp = dir.join(format!(
            ".{slot:08}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        super::write_private_key(&tmp, key).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    /// Fills slots `0..count` of `kind` on `threads` threads, calling `progress` about five
    /// times a second from the calling thread. Existing keys are kept.
    pub fn generate(
        &self,
        kind: KeyKind,
        count: u64,
        threads: usize,
        mut progress: impl FnMut(Progress),
    ) -> Result<Generated, PoolError> {
        self.prepare(kind)?;
        crate::crypto::install_crypto_provider();
        let start = Instant::now();
        let missing = self.missing(kind, count);
        let existing = count as usize - missing.len();
        let cursor = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let threads = threads.clamp(1, missing.len().max(1));
        let result = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> Result<(), PoolError> {
                        while !failed.load(Ordering::Relaxed) {
                            let i = cursor.fetch_add(1, Ordering::Relaxed);
                            let Some(&slot) = missing.get(i) else {
                                return Ok(());
                            };
                            let outcome = DeviceKey::generate(kind)
                                .map_err(PoolError::from)
                                .and_then(|key| self.store(slot, &key));
                            if let Err(e) = outcome {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            while workers.iter().any(|w| !w.is_finished()) {
                progress(Progress {
                    done: done.load(Ordering::Relaxed),
                    total: missing.len(),
                    elapsed: start.elapsed(),
                });
                std::thread::sleep(Duration::from_millis(200));
            }
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or(Ok(())))
                .collect::<Result<Vec<()>, PoolError>>()
        });
        result?;
        let generated = done.load(Ordering::Relaxed);
        progress(Progress {
            done: generated,
            total: missing.len(),
            elapsed: start.elapsed(),
        });
        Ok(Generated {
            existing,
            generated,
            elapsed: start.elapsed(),
        })
    }
}

/// The slot number of a pool file name (`00000042.pem`), if it is one.
fn slot_of(name: &std::ffi::OsStr) -> Option<u64> {
    let name = name.to_str()?;
    let digits = name.strip_suffix(".pem")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A one-line progress display for a terminal (`\r`-rewritten) or a log (a line per call).
pub fn progress_line(kind: KeyKind, p: Progress) -> String {
    let secs = p.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        p.done as f64 / secs
    } else {
        0.0
    };
    let eta = if rate > 0.0 {
        format!("{:.0} s left", (p.total - p.done) as f64 / rate)
    } else {
        "…".to_string()
    };
    let width = 30;
    let filled = (p.done * width).checked_div(p.total).unwrap_or(width);
    format!(
        "{} [{}{}] {}/{} keys, {:.1}/s, {}",
        kind.name(),
        "#".repeat(filled),
        " ".repeat(width - filled),
        p.done,
        p.total,
        rate,
        eta
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_eight_digits() {
        assert_eq!(slot_of("00000042.pem".as_ref()), Some(42));
        assert_eq!(slot_of("42.pem".as_ref()), None);
        assert_eq!(slot_of(".00000042.1.tmp".as_ref()), None);
        assert_eq!(slot_of("0000004x.pem".as_ref()), None);
    }

    #[test]
    fn progress_line_shows_counts() {
        let line = progress_line(
            KeyKind::Rsa2048,
            Progress {
                done: 5,
                total: 10,
                elapsed: Duration::from_secs(1),
            },
        );
        assert!(line.starts_with("rsa-2048 ["), "{line}");
        assert!(line.contains("5/10 keys"), "{line}");
    }
}

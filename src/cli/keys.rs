//! `fleetsim keys`: fill and inspect the on-disk key pool ([`crate::crypto::pool`]).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::crypto::KeyKind;
use crate::crypto::pool::{KeyPool, progress_line};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate keys into the pool on all cores (existing keys are kept).
    Generate {
        /// p256, p384, rsa-2048, rsa-3072 or rsa-4096.
        #[arg(long)]
        kind: KeyKind,
        /// Make the pool hold at least this many keys (slots 0..count).
        #[arg(long)]
        count: u64,
        /// Pool directory [default: $XDG_CACHE_HOME/fleetsim/keys or ~/.cache/fleetsim/keys].
        #[arg(long, env = "FLEETSIM_KEY_DIR")]
        dir: Option<PathBuf>,
        /// Threads to generate on [default: one per core].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Show how many keys of each kind the pool holds.
    List {
        #[arg(long, env = "FLEETSIM_KEY_DIR")]
        dir: Option<PathBuf>,
    },
}

fn open(dir: Option<PathBuf>) -> anyhow::Result<KeyPool> {
    Ok(match dir {
        Some(d) => KeyPool::new(d),
        None => KeyPool::open_default()?,
    })
}

pub fn main(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate {
            kind,
            count,
            dir,
            threads,
        } => {
            let pool = open(dir)?;
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let tty = std::io::stderr().is_terminal();
            let mut last_line = std::time::Instant::now();
            let done = pool.generate(kind, count, threads, |p| {
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r{}", progress_line(kind, p));
                } else if last_line.elapsed().as_secs() >= 5 || p.done == p.total {
                    // Not a terminal: a line every few seconds, not a line per redraw.
                    let _ = writeln!(err, "{}", progress_line(kind, p));
                    last_line = std::time::Instant::now();
                }
            })?;
            if tty {
                eprintln!();
            }
            let secs = done.elapsed.as_secs_f64();
            println!(
                "{}: {} keys in {} ({} generated in {:.1} s on {threads} threads{}, {} already there)",
                kind.name(),
                done.existing + done.generated,
                pool.kind_dir(kind).display(),
                done.generated,
                secs,
                if done.generated > 0 && secs > 0.0 {
                    format!(", {:.1} keys/s", done.generated as f64 / secs)
                } else {
                    String::new()
                },
                done.existing
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { dir } => {
            let pool = open(dir)?;
            println!("key pool: {}", pool.root().display());
            for kind in KeyKind::ALL {
                println!("  {:<9} {:>8}", kind.name(), pool.count(kind)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! Process limits that bound how many devices one process can hold: the open-file limit (one
//! descriptor per device connection, two per device when the embedded hub serves it in the same
//! process). At start the soft limit is raised to the hard one, and a scenario that needs more
//! descriptors than that is named before the run, with the numbers, instead of failing halfway
//! with `EMFILE` ("Too many open files").

/// Descriptors a process uses besides device connections: runtime, CA and registry HTTP
/// connections (concurrent enrolments), listeners, files. Measured well under this.
pub const BASE_DESCRIPTORS: u64 = 512;

/// The open-file limit after [`raise_nofile`]: (soft, hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before it was raised.
    pub before: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit. Returns the limits, or the OS error.
// `rlim_t` is u64 here but not on every platform libc supports.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile() -> std::io::Result<NoFile> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur as u64;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(NoFile {
        soft: lim.rlim_cur as u64,
        hard: lim.rlim_max as u64,
        before,
    })
}

/// Descriptors a run of `devices` needs: one socket each, another each when the hub is embedded.
pub fn descriptors_needed(devices: u64, embedded_hub: bool) -> u64 {
    let per_device = if embedded_hub { 2 } else { 1 };
    devices * per_device + BASE_DESCRIPTORS
}

/// A warning for the user when `needed` exceeds what the process may open, else `None`.
pub fn shortfall_warning(
    needed: u64,
    limit: NoFile,
    devices: u64,
    embedded_hub: bool,
) -> Option<String> {
    if needed <= limit.soft {
        return None;
    }
    let per_device = if embedded_hub { 2 } else { 1 };
    let fits = limit.soft.saturating_sub(BASE_DESCRIPTORS) / per_device;
    let how = if embedded_hub {
        "the embedded hub holds the other end of every connection in this process: run `fleetsim emulate` separately with a remote target (see README, \"Large local runs\"), or shard the fleet with --shard"
    } else {
        "shard the fleet over several processes (--shard i/n)"
    };
    Some(format!(
        "{devices} devices need about {needed} open files ({per_device} per device + {BASE_DESCRIPTORS}), but this process may open {} (hard limit {}); about {fits} devices fit. Raise the hard limit (ulimit -Hn, LimitNOFILE=) or {how}",
        limit.soft, limit.hard
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limits as the kernel has them now: (soft, hard).
    #[allow(clippy::unnecessary_cast)]
    fn read_back() -> (u64, u64) {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        (lim.rlim_cur as u64, lim.rlim_max as u64)
    }

    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn raising_reaches_the_hard_limit() {
        // Lower the soft limit first (to half the hard one, plenty for the other tests in this
        // process), so there is something to raise whatever the machine's defaults are.
        let (_, hard) = read_back();
        let lowered = libc::rlimit {
            rlim_cur: (hard / 2) as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        let l = raise_nofile().unwrap();
        assert_eq!(l.before, hard / 2, "the limit before raising, as read");
        assert_eq!(
            read_back(),
            (hard, hard),
            "the kernel's limit after raising"
        );
        assert_eq!((l.soft, l.hard), (hard, hard));
    }

    #[test]
    fn warns_only_past_the_limit() {
        let l = NoFile {
            soft: 20_000,
            hard: 20_000,
            before: 1024,
        };
        assert!(shortfall_warning(descriptors_needed(10_000, false), l, 10_000, false).is_none());
        let w = shortfall_warning(descriptors_needed(10_000, true), l, 10_000, true).unwrap();
        assert!(w.contains("20512 open files"), "{w}");
        assert!(w.contains("about 9744 devices fit"), "{w}");
    }
}

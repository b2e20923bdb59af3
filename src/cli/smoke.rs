//! `fleetsim run --smoke` and its finer forms `--max-devices N` / `--max-duration SPAN`: the
//! scenario shrunk with its shape kept ([`crate::scenario::smoke`]), so CI can run every shipped
//! scenario, thresholds included, in seconds.

use crate::scenario::{self, Scenario, smoke::Shrink};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct SmokeArgs {
    /// Run a smoke form of the scenario: at most 10 devices for at most 10 s, with its times,
    /// arrival rates and certificate lifetimes scaled to keep its shape, thresholds included.
    #[arg(long)]
    pub smoke: bool,
    /// At most N devices (fixed cohort counts and arrival rates scaled with them).
    #[arg(long, value_name = "N")]
    pub max_devices: Option<u32>,
    /// At most this long (e.g. 20s); event times, arrival stages and time_scale shrink with it.
    #[arg(long, value_name = "SPAN", value_parser = super::spans::parse_span)]
    pub max_duration: Option<std::time::Duration>,
}

impl SmokeArgs {
    /// The ceilings asked for: `--smoke`'s, each overridden by its explicit flag.
    pub fn shrink(&self) -> Shrink {
        let base = match self.smoke {
            true => Shrink::smoke(),
            false => Shrink::default(),
        };
        Shrink {
            max_devices: self.max_devices.or(base.max_devices),
            max_duration: self.max_duration.or(base.max_duration),
        }
    }
}

/// `scenario` shrunk as `args` ask, saying so on stderr when it changed.
pub fn apply(scenario: Scenario, args: &SmokeArgs) -> anyhow::Result<Scenario> {
    let shrink = args.shrink();
    if shrink.is_none() {
        return Ok(scenario);
    }
    let (small, note) = scenario::smoke::shrink(&scenario, shrink).map_err(anyhow::Error::msg)?;
    if let Some(note) = note {
        eprintln!("fleetsim: {note}");
    }
    Ok(small)
}

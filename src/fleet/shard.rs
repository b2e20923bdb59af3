//! Sharding: `fleetsim run --shard i/n` runs every `n`-th device of each cohort, starting with
//! the cohort's `i`-th (0-based, so the shards of two are `0/2` and `1/2`, like a Kubernetes
//! Indexed Job's completion index), so each cohort splits evenly among the shards.
//!
//! Every device keeps what it would have had in the whole run: its id, its cohort, its seed and,
//! in the open model, its arrival slot, so n shards together start exactly the scenario's devices
//! at exactly the scenario's instants (each shard at 1/n of the rate). What cannot be sliced by
//! device is divided: the closed model's places in flight (spread so they add up to the whole)
//! and the fleet's limits (each shard gets 1/n of each rate).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {0:?}: expected INDEX/COUNT, e.g. 0/2 (indices start at 0)")]
    Syntax(String),
    #[error("--shard {0}: the shard count must be at least 1")]
    ZeroCount(String),
    #[error("--shard {text}: the index must be below the count (0/{count} to {last}/{count})", last = count - 1)]
    IndexTooHigh { text: String, count: u32 },
    #[error("--shard {shard}: the fleet has {devices} devices, fewer than the {count} shards", count = shard.count)]
    MoreShardsThanDevices { shard: Shard, devices: u64 },
    #[error("--shard {shard}: max_in_flight {places} cannot be divided among {count} shards (each needs at least one)", count = shard.count)]
    TooFewPlaces { shard: Shard, places: u32 },
}

/// One slice of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self::WHOLE
    }
}

impl Shard {
    /// The unsharded run.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether the `index`-th device (of a cohort) runs in this shard.
    pub fn owns(&self, index: u64) -> bool {
        index % u64::from(self.count) == u64::from(self.index)
    }

    /// This shard's part of a rate.
    pub fn rate(&self, per_second: f64) -> f64 {
        per_second / f64::from(self.count)
    }

    /// This shard's places of `total` in flight: `total / n`, the remainder to the first shards,
    /// so the shards' places add up to `total`.
    pub fn places(&self, total: u32) -> Result<u32, ShardError> {
        let share = total / self.count + u32::from(self.index < total % self.count);
        if share == 0 {
            return Err(ShardError::TooFewPlaces {
                shard: *self,
                places: total,
            });
        }
        Ok(share)
    }

    /// Checks that every shard of a fleet of `devices` gets at least one device.
    pub fn check_devices(&self, devices: u64) -> Result<(), ShardError> {
        if devices < u64::from(self.count) {
            return Err(ShardError::MoreShardsThanDevices {
                shard: *self,
                devices,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, ShardError> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (i, n) = s.trim().split_once('/').ok_or_else(syntax)?;
        let index: u32 = i.trim().parse().map_err(|_| syntax())?;
        let count: u32 = n.trim().parse().map_err(|_| syntax())?;
        if count == 0 {
            return Err(ShardError::ZeroCount(s.to_string()));
        }
        if index >= count {
            return Err(ShardError::IndexTooHigh {
                text: s.to_string(),
                count,
            });
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        let e = "3/2".parse::<Shard>().unwrap_err().to_string();
        assert!(e.contains("below the count (0/2 to 1/2)"), "{e}");
        assert!(matches!(
            "1/0".parse::<Shard>(),
            Err(ShardError::ZeroCount(_))
        ));
        assert!(matches!("a/2".parse::<Shard>(), Err(ShardError::Syntax(_))));
        assert!(matches!("2".parse::<Shard>(), Err(ShardError::Syntax(_))));
    }

    #[test]
    fn slices_cover_the_fleet_once() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        for device in 0..10u64 {
            assert_eq!(shards.iter().filter(|s| s.owns(device)).count(), 1);
        }
        let places: Vec<u32> = shards.iter().map(|s| s.places(7).unwrap()).collect();
        assert_eq!(places, vec![3, 2, 2]);
        assert!(shards[2].places(2).is_err());
    }
}

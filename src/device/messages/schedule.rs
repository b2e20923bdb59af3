//! When a device's next message is due, from its cohort's [`Schedule`]: fixed or jittered
//! gaps, Poisson arrivals, ticks aligned to the wall clock, each tick possibly a burst. The
//! device asks for one due time at a time, so the interval can change while it runs
//! ([`MessageSchedule::set_interval`], for cloud-to-device behaviours).
//!
//! Aligned ticks are computed on the wall clock (Unix time) and turned into `Instant`s when they
//! are handed out, so they stay on the minute however long the run lasts.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::time::Instant;

use crate::scenario::draw;
use crate::scenario::schedule::{Jitter, Schedule, Ticks};

/// One device's message schedule.
pub struct MessageSchedule {
    spec: Schedule,
    /// The interval now (the mean interval of Poisson arrivals).
    every: Duration,
    rng: SmallRng,
    /// The current tick, and the one before it (when the current one was computed from it).
    tick: Instant,
    previous: Option<Instant>,
    /// Aligned ticks on the wall clock (time since the Unix epoch).
    tick_wall: Duration,
    previous_wall: Duration,
    /// An aligned tick's delay (`jitter`), drawn per tick.
    offset: Duration,
    /// Messages of the current tick handed out so far.
    sent_in_tick: u32,
}

/// The `Instant` at which the wall clock reads `target`, given that it read `wall` at `now`.
fn at_wall(now: Instant, wall: Duration, target: Duration) -> Instant {
    match target.checked_sub(wall) {
        Some(ahead) => now + ahead,
        None => now.checked_sub(wall - target).unwrap_or(now),
    }
}

/// The first multiple of `align` at or after `wall`.
fn next_multiple(wall: Duration, align: Duration) -> Duration {
    let align_ns = align.as_nanos().max(1);
    let ticks = wall.as_nanos().div_ceil(align_ns);
    Duration::from_nanos(u64::try_from(ticks * align_ns).unwrap_or(u64::MAX))
}

impl MessageSchedule {
    /// A schedule following `spec`, its random draws seeded with `seed`.
    pub fn new(spec: Schedule, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            spec,
            every: spec.mean_interval(),
            rng: SmallRng::seed_from_u64(seed),
            tick: now,
            previous: None,
            tick_wall: Duration::ZERO,
            previous_wall: Duration::ZERO,
            offset: Duration::ZERO,
            sent_in_tick: 0,
        }
    }

    /// The interval now: the schedule's, or the last one [`set_interval`](Self::set_interval)
    /// gave.
    pub fn interval(&self) -> Duration {
        self.every
    }

    /// When the first message is due, for a device that came online at `now`, when the wall
    /// clock read `wall`: at once, at the first aligned tick, or (Poisson) after a first
    /// exponential gap.
    pub fn first(&mut self, now: Instant, wall: Duration) -> Instant {
        self.sent_in_tick = 1;
        self.previous = None;
        match self.spec.ticks {
            Ticks::Aligned { align, jitter, .. } => {
                self.tick_wall = next_multiple(wall, align);
                self.tick = at_wall(now, wall, self.tick_wall);
                self.offset = self.delay(jitter);
            }
            Ticks::Poisson { .. } => {
                // Any moment of a Poisson process is as far from its next event as any other:
                // coming online is not an event.
                let gap = draw::exponential(&mut self.rng, self.every.as_secs_f64());
                self.tick = now + Duration::from_secs_f64(gap);
                self.offset = Duration::ZERO;
            }
            Ticks::Every { .. } => {
                self.tick = now;
                self.offset = Duration::ZERO;
            }
        }
        self.tick + self.offset
    }

    /// When the message after the last one handed out is due (`now` and `wall` as in
    /// [`first`](Self::first)).
    pub fn next(&mut self, now: Instant, wall: Duration) -> Instant {
        if self.sent_in_tick < self.spec.count {
            self.sent_in_tick += 1;
            return self.tick + self.offset + self.spec.spacing * (self.sent_in_tick - 1);
        }
        self.previous = Some(self.tick);
        self.previous_wall = self.tick_wall;
        self.advance(now, wall);
        self.sent_in_tick = 1;
        self.tick + self.offset
    }

    /// Changes the interval (for Poisson arrivals, the mean interval) from now on. The next
    /// message, if it starts a tick, is moved to the new interval after the previous tick;
    /// returns when it is now due (the one given, if it was inside a burst).
    pub fn set_interval(
        &mut self,
        every: Duration,
        now: Instant,
        wall: Duration,
        due: Instant,
    ) -> Instant {
        self.every = every.max(Duration::from_millis(1));
        match self.previous {
            Some(previous) if self.sent_in_tick == 1 => {
                self.tick = previous;
                self.tick_wall = self.previous_wall;
                self.advance(now, wall);
                self.tick + self.offset
            }
            _ => due,
        }
    }

    /// Moves the current tick to the next one.
    fn advance(&mut self, now: Instant, wall: Duration) {
        match self.spec.ticks {
            Ticks::Every { jitter, .. } => {
                let amplitude = jitter.amplitude(self.every).as_secs_f64();
                let gap =
                    self.every.as_secs_f64() + draw::uniform(&mut self.rng, -amplitude, amplitude);
                self.tick += Duration::from_secs_f64(gap.max(0.0));
            }
            Ticks::Poisson { .. } => {
                let gap = draw::exponential(&mut self.rng, self.every.as_secs_f64());
                self.tick += Duration::from_secs_f64(gap);
            }
            Ticks::Aligned { jitter, .. } => {
                self.tick_wall += self.every;
                self.tick = at_wall(now, wall, self.tick_wall);
                self.offset = self.delay(jitter);
            }
        }
    }

    /// An aligned tick's delay: uniform in [0, jitter].
    fn delay(&mut self, jitter: Jitter) -> Duration {
        let amplitude = jitter.amplitude(self.every).as_secs_f64();
        match amplitude > 0.0 {
            true => Duration::from_secs_f64(draw::uniform(&mut self.rng, 0.0, amplitude)),
            false => Duration::ZERO,
        }
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;

//! Per-node clocks: a monotonic clock and a wall clock.
//!
//! A machine never sees global simulated time. Its node's monotonic clock runs
//! at `1 + drift_ppm / 10^6` of global speed from zero at the scenario's start;
//! its wall clock is the monotonic reading plus an offset that scheduled jumps
//! change. A wall-clock jump therefore moves `now.wall` and never `now.mono`,
//! which is what separates a `datetime.now()` implementation from an
//! `Instant` one.

use crate::time::Timestamp;

/// The two readings a machine is handed with every input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Never goes backwards; unaffected by jumps.
    pub mono: Timestamp,
    /// What `SystemTime::now()` / `datetime.now()` would say: jumps with the
    /// scenario's clock faults, clamped at the epoch.
    pub wall: Timestamp,
}

/// Largest accepted drift, in parts per million either way.
pub const MAX_DRIFT_PPM: i64 = 500_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    drift_ppm: i64,
    wall_offset_us: i64,
}

impl Clock {
    /// `None` if the drift is outside `±MAX_DRIFT_PPM`.
    pub fn new(drift_ppm: i64, wall_offset_us: i64) -> Option<Clock> {
        (drift_ppm.abs() <= MAX_DRIFT_PPM).then_some(Clock {
            drift_ppm,
            wall_offset_us,
        })
    }

    fn mono_us(&self, global: Timestamp) -> u64 {
        let g = i128::from(global.as_us());
        let local = g + g * i128::from(self.drift_ppm) / 1_000_000;
        u64::try_from(local.max(0)).unwrap_or(u64::MAX)
    }

    pub fn now(&self, global: Timestamp) -> Now {
        let mono = Timestamp::from_us(self.mono_us(global));
        Now {
            mono,
            wall: mono.offset_by(self.wall_offset_us),
        }
    }

    /// The earliest global time at which the monotonic clock reads at least
    /// `deadline`: when a timer armed for `deadline` fires.
    pub fn global_at(&self, deadline: Timestamp) -> Timestamp {
        if self.drift_ppm == 0 {
            return deadline;
        }
        let local = i128::from(deadline.as_us());
        let denom = 1_000_000 + i128::from(self.drift_ppm);
        // Estimate, then step to the exact boundary (integer division makes
        // the clock a step function).
        let mut g = u64::try_from(local * 1_000_000 / denom).unwrap_or(u64::MAX);
        while g > 0 && self.mono_us(Timestamp::from_us(g - 1)) >= deadline.as_us() {
            g -= 1;
        }
        while self.mono_us(Timestamp::from_us(g)) < deadline.as_us() {
            g += 1;
        }
        Timestamp::from_us(g)
    }

    /// Step the wall clock by `by_us` (negative: backwards).
    pub fn jump(&mut self, by_us: i64) {
        self.wall_offset_us = self.wall_offset_us.saturating_add(by_us);
    }

    pub fn set_drift(&mut self, drift_ppm: i64) -> bool {
        if drift_ppm.abs() > MAX_DRIFT_PPM {
            return false;
        }
        self.drift_ppm = drift_ppm;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_moves_wall_not_mono() {
        let mut c = Clock::default();
        let t = Timestamp::from_us(10_000_000);
        c.jump(3_600_000_000);
        let n = c.now(t);
        assert_eq!(n.mono, t);
        assert_eq!(n.wall.as_us(), 3_610_000_000);
        c.jump(-7_200_000_000);
        assert_eq!(c.now(t).wall, Timestamp::ZERO, "wall clamps at the epoch");
    }

    #[test]
    fn drift_and_inverse_agree() {
        for ppm in [-300_000, -1, 0, 1, 100, 250_000] {
            let c = Clock::new(ppm, 0).unwrap();
            for d in [1u64, 999, 60_000_000, 86_400_000_000] {
                let deadline = Timestamp::from_us(d);
                let g = c.global_at(deadline);
                assert!(c.now(g).mono >= deadline, "ppm {ppm} d {d}");
                if g.as_us() > 0 {
                    assert!(c.now(Timestamp::from_us(g.as_us() - 1)).mono < deadline);
                }
            }
        }
        let fast = Clock::new(100_000, 0).unwrap(); // 10% fast
        assert_eq!(
            fast.now(Timestamp::from_us(60_000_000)).mono.as_us(),
            66_000_000
        );
    }
}

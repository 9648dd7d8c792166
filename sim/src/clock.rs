//! Per-node clocks: a monotonic clock and a wall clock.
//!
//! A machine never sees global simulated time. Its node's monotonic clock runs
//! at `1 + drift_ppm / 10^6` of global speed from zero at the scenario's start
//! (a scheduled drift change bends it there, without a jump);
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
    /// Where the current drift took effect: `(global, mono)` microseconds.
    /// The monotonic clock is piecewise linear through these anchors.
    anchor_global_us: u64,
    anchor_mono_us: u64,
}

impl Clock {
    /// `None` if the drift is outside `±MAX_DRIFT_PPM`.
    pub fn new(drift_ppm: i64, wall_offset_us: i64) -> Option<Clock> {
        (drift_ppm.unsigned_abs() <= MAX_DRIFT_PPM.unsigned_abs()).then_some(Clock {
            drift_ppm,
            wall_offset_us,
            ..Clock::default()
        })
    }

    /// The current drift, in parts per million.
    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }

    fn mono_us(&self, global: Timestamp) -> u64 {
        // Global time never runs backwards past the anchor (it was set at
        // "now"), so the span is never negative.
        let g = i128::from(global.as_us().saturating_sub(self.anchor_global_us));
        let local =
            i128::from(self.anchor_mono_us) + g + g * i128::from(self.drift_ppm) / 1_000_000;
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
        let anchor = self.anchor_global_us;
        if deadline.as_us() <= self.anchor_mono_us {
            return Timestamp::from_us(anchor);
        }
        let local = i128::from(deadline.as_us() - self.anchor_mono_us);
        if self.drift_ppm == 0 {
            return Timestamp::from_us(anchor.saturating_add(local as u64));
        }
        let denom = 1_000_000 + i128::from(self.drift_ppm);
        // Estimate, then step to the exact boundary (integer division makes
        // the clock a step function).
        let estimate = i128::from(anchor) + local * 1_000_000 / denom;
        let mut g = u64::try_from(estimate).unwrap_or(u64::MAX);
        while g > anchor && self.mono_us(Timestamp::from_us(g - 1)) >= deadline.as_us() {
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

    /// From global time `at` on, run at `drift_ppm`. The reading at `at` is
    /// unchanged: a drift change bends the clock, it never jumps it. `false`
    /// (and no change) if the drift is outside `±MAX_DRIFT_PPM`.
    pub fn set_drift(&mut self, at: Timestamp, drift_ppm: i64) -> bool {
        if drift_ppm.unsigned_abs() > MAX_DRIFT_PPM.unsigned_abs() {
            return false;
        }
        self.anchor_mono_us = self.mono_us(at);
        self.anchor_global_us = at.as_us();
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
    fn drift_change_bends_the_clock_without_a_jump() {
        let mut c = Clock::new(100_000, 0).unwrap(); // 10% fast
        let t1 = Timestamp::from_us(60_000_000);
        assert_eq!(c.now(t1).mono.as_us(), 66_000_000);
        assert!(c.set_drift(t1, -100_000)); // now 10% slow
        assert_eq!(c.now(t1).mono.as_us(), 66_000_000, "no jump at the change");
        assert_eq!(
            c.now(Timestamp::from_us(120_000_000)).mono.as_us(),
            66_000_000 + 54_000_000
        );
        // A deadline after the change maps back through the new rate...
        let g = c.global_at(Timestamp::from_us(120_000_000));
        assert_eq!(c.now(g).mono.as_us(), 120_000_000);
        assert!(c.now(Timestamp::from_us(g.as_us() - 1)).mono.as_us() < 120_000_000);
        // ...and one already passed at the change is due at the change.
        assert_eq!(c.global_at(Timestamp::from_us(10_000_000)), t1);
        assert!(!c.set_drift(t1, MAX_DRIFT_PPM + 1));
        assert_eq!(c.now(t1).mono.as_us(), 66_000_000);
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

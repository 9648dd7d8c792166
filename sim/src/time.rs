//! Integer simulated time.
//!
//! Time is whole microseconds in two newtypes: [`Timestamp`] (a point) and
//! [`Duration`] (a span). Integers are `Ord`, exact and portable; floats are
//! none of these, and `std::time::Instant` cannot be written to a scenario file.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

/// A point in simulated time: microseconds since the scenario started (or since
/// a clock's epoch, for a node's wall clock).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Timestamp(u64);

/// A span of simulated time in microseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

const US_PER_MS: u64 = 1_000;
const US_PER_S: u64 = 1_000_000;

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    pub const fn from_us(us: u64) -> Self {
        Timestamp(us)
    }
    pub const fn as_us(self) -> u64 {
        self.0
    }
    /// Time elapsed since `earlier`, or zero if `earlier` is later (a wall
    /// clock that jumped backwards).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
    /// `self - d`, clamped at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }
    pub fn checked_add(self, d: Duration) -> Option<Timestamp> {
        self.0.checked_add(d.0).map(Timestamp)
    }
    /// Shift by a signed number of microseconds, clamped to `[0, u64::MAX]`.
    pub fn offset_by(self, us: i64) -> Timestamp {
        Timestamp(self.0.saturating_add_signed(us))
    }
}

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub const fn from_us(us: u64) -> Self {
        Duration(us)
    }
    pub const fn from_ms(ms: u64) -> Self {
        Duration(ms * US_PER_MS)
    }
    pub const fn from_secs(s: u64) -> Self {
        Duration(s * US_PER_S)
    }
    pub const fn as_us(self) -> u64 {
        self.0
    }
    pub fn checked_mul(self, n: u64) -> Option<Duration> {
        self.0.checked_mul(n).map(Duration)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturates: simulated time never wraps. The drive loop stops long before
    /// `u64::MAX` microseconds (585,000 years) because durations are capped.
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        self.saturating_sub(d)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}

/// `H:MM:SS.mmm`, with three more digits when the microseconds are not zero:
/// `0:11:30.000`, `0:11:30.000250`.
fn fmt_us(us: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let ms_total = us / US_PER_MS;
    let sub_ms = us % US_PER_MS;
    let s_total = ms_total / 1000;
    let ms = ms_total % 1000;
    let (h, m, s) = (s_total / 3600, (s_total / 60) % 60, s_total % 60);
    write!(f, "{h}:{m:02}:{s:02}.{ms:03}")?;
    if sub_ms != 0 {
        write!(f, "{sub_ms:03}")?;
    }
    Ok(())
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_us(self.0, f)
    }
}
impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_us(self.0, f)
    }
}
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_us(self.0, f)
    }
}
impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us", self.0)
    }
}

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseDurationError {
    #[error("empty duration: expected a number and a unit, like \"90s\" or \"11m30s\"")]
    Empty,
    #[error("expected a unit (h, m, s, ms, us) after {0}")]
    MissingUnit(u64),
    #[error("unknown unit {0:?}: expected h, m, s, ms or us")]
    UnknownUnit(String),
    #[error("expected a digit at {0:?}")]
    ExpectedDigit(String),
    #[error("unexpected {0:?}: a duration is whole numbers with units, like \"1s500ms\"")]
    Unexpected(String),
    #[error("duration is too large")]
    Overflow,
}

/// Parses `"11m30s"`, `"1500s"`, `"250ms"`, `"2h"`, `"0s"`: one or more
/// number-unit pairs, units `h`, `m`, `s`, `ms`, `us`. No floats: `"1.5s"` is
/// rejected, write `"1s500ms"`.
impl FromStr for Duration {
    type Err = ParseDurationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        let mut rest = text;
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(ParseDurationError::ExpectedDigit(rest.to_string()));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| ParseDurationError::Overflow)?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
            if unit_len == 0 {
                return Err(if rest.is_empty() {
                    ParseDurationError::MissingUnit(n)
                } else {
                    ParseDurationError::Unexpected(rest.to_string())
                });
            }
            let per_unit = match &rest[..unit_len] {
                "h" => 3600 * US_PER_S,
                "m" => 60 * US_PER_S,
                "s" => US_PER_S,
                "ms" => US_PER_MS,
                "us" => 1,
                other => return Err(ParseDurationError::UnknownUnit(other.to_string())),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(per_unit)
                .and_then(|us| total.checked_add(us))
                .ok_or(ParseDurationError::Overflow)?;
        }
        Ok(Duration(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!("11m30s".parse::<Duration>(), Ok(Duration::from_secs(690)));
        assert_eq!("1h".parse::<Duration>(), Ok(Duration::from_secs(3600)));
        assert_eq!("250ms".parse::<Duration>(), Ok(Duration::from_ms(250)));
        assert_eq!(
            "1s500us".parse::<Duration>(),
            Ok(Duration::from_us(1_000_500))
        );
        assert_eq!("0s".parse::<Duration>(), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_durations() {
        assert_eq!("".parse::<Duration>(), Err(ParseDurationError::Empty));
        assert_eq!(
            "10".parse::<Duration>(),
            Err(ParseDurationError::MissingUnit(10))
        );
        assert!(matches!(
            "1.5s".parse::<Duration>(),
            Err(ParseDurationError::Unexpected(_))
        ));
        assert!(matches!(
            "m5".parse::<Duration>(),
            Err(ParseDurationError::ExpectedDigit(_))
        ));
        assert!(
            matches!("3d".parse::<Duration>(), Err(ParseDurationError::UnknownUnit(u)) if u == "d")
        );
        assert_eq!(
            "99999999999999h".parse::<Duration>(),
            Err(ParseDurationError::Overflow)
        );
    }

    #[test]
    fn displays_hours_minutes_seconds_millis() {
        assert_eq!(Timestamp::from_us(690_000_000).to_string(), "0:11:30.000");
        assert_eq!(
            Timestamp::from_us(90_000_000_250).to_string(),
            "25:00:00.000250"
        );
    }
}

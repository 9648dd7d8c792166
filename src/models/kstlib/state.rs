//! The state file: what `Heartbeat.beat` writes and what its readers make
//! of it. Pure functions of bytes and wall-clock readings.
//!
//! Upstream: kstlib 2.0.0 `kstlib/resilience/heartbeat.py` (`HeartbeatState`,
//! `beat`, `read_state`, `is_alive`) and `kstlib/resilience/watchdog.py`
//! (`Watchdog._is_state_file_alive`, lines 476-489).

use heartsim_sim::Timestamp;
use serde_json::Value;

/// Wall-clock zero of every host: the simulated epoch reads as this
/// instant (the example timestamp of upstream's `HeartbeatState` docstring).
/// Days since 1970-01-01 and seconds into the day.
const EPOCH_DAYS: i64 = 20_465; // 2026-01-12
const EPOCH_SECS_OF_DAY: i64 = 10 * 3600;

/// `datetime.now(timezone.utc).isoformat()` at wall reading `wall`:
/// `2026-01-12T10:00:10+00:00`, with `.ffffff` only when the microseconds
/// are not zero (as CPython's `isoformat` does).
pub fn isoformat(wall: Timestamp) -> String {
    let us = wall.as_us();
    let secs = (us / 1_000_000) as i64 + EPOCH_SECS_OF_DAY;
    let micros = us % 1_000_000;
    let (days, sod) = (
        EPOCH_DAYS + secs.div_euclid(86_400),
        secs.rem_euclid(86_400),
    );
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, sod / 60 % 60, sod % 60);
    let frac = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}+00:00")
}

/// A naive timestamp (no UTC offset), as `datetime.now().isoformat()`
/// writes: for writers that are not upstream's.
pub fn isoformat_naive(wall: Timestamp) -> String {
    let aware = isoformat(wall);
    aware.trim_end_matches("+00:00").to_string()
}

/// `datetime.fromisoformat` raised `ValueError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotIso;

/// Microseconds since the simulated wall epoch of an ISO-8601 timestamp
/// (`datetime.fromisoformat`): `Ok(Some)` if it carries a UTC offset,
/// `Ok(None)` if naive, `Err` if it does not parse.
pub fn parse_iso(text: &str) -> Result<Option<i64>, NotIso> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, NotIso> {
        let s = text.get(r).ok_or(NotIso)?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(NotIso);
        }
        s.parse().map_err(|_| NotIso)
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(NotIso);
    }
    if b[10] != b'T' && b[10] != b' ' {
        return Err(NotIso);
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mi, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || hh > 23 || mi > 59 || ss > 59
    {
        return Err(NotIso);
    }
    let mut rest = &text[19..];
    let mut micros = 0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits != 3 && digits != 6 {
            return Err(NotIso);
        }
        micros =
            r[..digits].parse::<i64>().map_err(|_| NotIso)? * if digits == 3 { 1000 } else { 1 };
        rest = &r[digits..];
    }
    let offset_s = match rest {
        "" => None,
        "Z" => Some(0),
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(NotIso),
            };
            let o = &rest[1..];
            if o.len() != 5 || o.as_bytes()[2] != b':' {
                return Err(NotIso);
            }
            let (oh, om) = (num_in(o, 0..2)?, num_in(o, 3..5)?);
            if oh > 23 || om > 59 {
                return Err(NotIso);
            }
            Some(sign * (oh * 3600 + om * 60))
        }
    };
    let Some(offset_s) = offset_s else {
        return Ok(None);
    };
    let days = days_from_civil(y, mo, d) - EPOCH_DAYS;
    let secs = days * 86_400 + hh * 3600 + mi * 60 + ss - EPOCH_SECS_OF_DAY - offset_s;
    Ok(Some(secs * 1_000_000 + micros))
}

fn num_in(s: &str, r: std::ops::Range<usize>) -> Result<i64, NotIso> {
    let t = s.get(r).ok_or(NotIso)?;
    if !t.bytes().all(|c| c.is_ascii_digit()) {
        return Err(NotIso);
    }
    t.parse().map_err(|_| NotIso)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `json.dumps(HeartbeatState(...).to_dict(), indent=2)`: keys in
/// `to_dict` order, two-space indent, `metadata` empty (`{}`).
pub fn render(timestamp: &str, pid: u32, hostname: &str) -> Vec<u8> {
    format!(
        "{{\n  \"timestamp\": \"{timestamp}\",\n  \"pid\": {pid},\n  \"hostname\": \"{hostname}\",\n  \"metadata\": {{}}\n}}"
    )
    .into_bytes()
}

/// A reader's verdict on the state file, with why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `age <= max_age`, the timestamp in the past (or now).
    Fresh,
    /// A timestamp in the reader's future: negative age, alive.
    Future,
    /// `age > max_age`.
    Stale,
    /// `path.exists()` is false.
    Missing,
    /// Reading failed (`OSError`).
    Unreadable,
    /// `json.JSONDecodeError` (an empty or torn file).
    Unparsable,
    /// A required key is missing (`KeyError`).
    MissingKey,
    /// `fromisoformat` failed (`ValueError`, or `TypeError` for a
    /// timestamp that is not a string).
    BadTimestamp,
    /// A timestamp without a UTC offset: `now(timezone.utc) - beat_time`
    /// raises `TypeError`.
    Naive,
    /// The JSON is not an object: `is_alive` raises `TypeError` from
    /// `from_dict` (`read_state` does not catch it); the watchdog's
    /// `data.get` raises `AttributeError`, which it does not catch either.
    NotAnObject,
}

impl Verdict {
    pub fn alive(self) -> bool {
        matches!(self, Verdict::Fresh | Verdict::Future)
    }
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Fresh => "fresh",
            Verdict::Future => "future timestamp",
            Verdict::Stale => "stale",
            Verdict::Missing => "no state file",
            Verdict::Unreadable => "unreadable",
            Verdict::Unparsable => "unparsable",
            Verdict::MissingKey => "missing key",
            Verdict::BadTimestamp => "bad timestamp",
            Verdict::Naive => "naive timestamp",
            Verdict::NotAnObject => "not a JSON object",
        }
    }
}

/// Which reader judges: they require different keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// `Heartbeat.is_alive` through `read_state`/`HeartbeatState.from_dict`:
    /// `timestamp`, `pid` and `hostname` are required.
    IsAlive,
    /// `Watchdog._is_state_file_alive`: only a non-empty `timestamp`
    /// (`data.get("timestamp")`; `if not timestamp: return False`).
    Watchdog,
}

/// What `reader` makes of a read's outcome at wall reading `now_wall`,
/// with `max_age_s` seconds allowed: `age = (now - beat_time)
/// .total_seconds(); return age <= max_age` (`is_alive`, watchdog line 487).
pub fn judge(
    reader: Reader,
    read: Result<&[u8], heartsim_sim::Errno>,
    now_wall: Timestamp,
    max_age_s: f64,
) -> (Verdict, Option<Seen>) {
    let bytes = match read {
        Ok(b) => b,
        Err(heartsim_sim::Errno::Enoent) => return (Verdict::Missing, None),
        Err(_) => return (Verdict::Unreadable, None),
    };
    let Ok(data) = serde_json::from_slice::<Value>(bytes) else {
        return (Verdict::Unparsable, None);
    };
    let Value::Object(map) = &data else {
        return (Verdict::NotAnObject, None);
    };
    let timestamp = match reader {
        Reader::IsAlive => {
            if !["timestamp", "pid", "hostname"]
                .iter()
                .all(|k| map.contains_key(*k))
            {
                return (Verdict::MissingKey, None);
            }
            &map["timestamp"]
        }
        Reader::Watchdog => match map.get("timestamp") {
            None => return (Verdict::MissingKey, None),
            Some(v) if falsy(v) => return (Verdict::MissingKey, None),
            Some(v) => v,
        },
    };
    let Value::String(text) = timestamp else {
        return (Verdict::BadTimestamp, None);
    };
    let beat_us = match parse_iso(text) {
        Err(NotIso) => return (Verdict::BadTimestamp, None),
        Ok(None) => return (Verdict::Naive, None),
        Ok(Some(us)) => us,
    };
    let now_us = i64::try_from(now_wall.as_us()).unwrap_or(i64::MAX);
    let age_us = now_us.saturating_sub(beat_us);
    // `timedelta.total_seconds()` divides the exact microseconds by 10**6:
    // one correctly rounded division, as here.
    #[allow(clippy::cast_precision_loss)]
    let age_s = age_us as f64 / 1e6;
    let verdict = if age_s <= max_age_s {
        if age_us < 0 {
            Verdict::Future
        } else {
            Verdict::Fresh
        }
    } else {
        Verdict::Stale
    };
    let seen = Seen {
        timestamp: text.clone(),
        age_us,
        pid: map.get("pid").and_then(Value::as_i64),
    };
    (verdict, Some(seen))
}

/// What a reader saw in a file that parsed: the timestamp, its age on the
/// reader's clock, and the pid (which shows whose state it is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub timestamp: String,
    pub age_us: i64,
    pub pid: Option<i64>,
}

/// Python truthiness of a JSON value (`if not timestamp`).
fn falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// `Path(state_file).with_suffix(".tmp")`: the last suffix of the last
/// component replaced (pathlib: a suffix is a `.` not at the start and not
/// at the end of the name), so `bot.heartbeat` and `bot.json` share
/// `bot.tmp` (upstream `beat`: `temp_file = self._state_file.with_suffix(".tmp")`).
pub fn temp_path(state_file: &str) -> String {
    let (dir, name) = match state_file.rfind('/') {
        Some(i) => (&state_file[..=i], &state_file[i + 1..]),
        None => ("", state_file),
    };
    let stem = match name.rfind('.') {
        Some(i) if i > 0 && i < name.len() - 1 => &name[..i],
        _ => name,
    };
    format!("{dir}{stem}.tmp")
}

/// The parent directory `beat` creates (`self._state_file.parent.mkdir(
/// parents=True, exist_ok=True)`).
pub fn parent_dir(state_file: &str) -> String {
    match state_file.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => state_file[..i].to_string(),
        None => ".".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartsim_sim::{Duration, Errno};

    fn at(s: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_secs(s)
    }

    fn file(ts: &str) -> Vec<u8> {
        render(ts, 100, "h")
    }

    #[test]
    fn isoformat_omits_zero_microseconds_and_round_trips() {
        assert_eq!(isoformat(at(10)), "2026-01-12T10:00:10+00:00");
        let t = Timestamp::from_us(250_000);
        assert_eq!(isoformat(t), "2026-01-12T10:00:00.250000+00:00");
        assert_eq!(isoformat(at(14 * 3600)), "2026-01-13T00:00:00+00:00");
        assert_eq!(parse_iso(&isoformat(t)), Ok(Some(250_000)));
        assert_eq!(parse_iso("2026-01-12T10:00:00"), Ok(None));
        assert_eq!(parse_iso("2026-01-12T11:00:00+01:00"), Ok(Some(0)));
        assert_eq!(parse_iso("2026-01-12T10:00:0"), Err(NotIso));
        assert_eq!(parse_iso("2026-02-30T10:00:00+00:00"), Err(NotIso));
    }

    #[test]
    fn is_alive_is_age_at_most_max_age() {
        let f = file(&isoformat(at(10)));
        let judge_at = |s| judge(Reader::IsAlive, Ok(&f), at(s), 30.0).0;
        assert_eq!(judge_at(40), Verdict::Fresh);
        assert_eq!(
            judge(
                Reader::IsAlive,
                Ok(&f),
                Timestamp::from_us(40_000_001),
                30.0
            )
            .0,
            Verdict::Stale
        );
        // A timestamp ahead of the reader's clock: negative age, alive.
        assert_eq!(judge_at(0), Verdict::Future);
    }

    #[test]
    fn readers_differ_on_required_keys() {
        let only_ts = br#"{"timestamp": "2026-01-12T10:00:00+00:00"}"#;
        assert_eq!(
            judge(Reader::IsAlive, Ok(only_ts), at(1), 30.0).0,
            Verdict::MissingKey
        );
        assert_eq!(
            judge(Reader::Watchdog, Ok(only_ts), at(1), 30.0).0,
            Verdict::Fresh
        );
        let empty_ts = br#"{"timestamp": "", "pid": 1, "hostname": "h"}"#;
        assert_eq!(
            judge(Reader::Watchdog, Ok(empty_ts), at(1), 30.0).0,
            Verdict::MissingKey
        );
        assert_eq!(
            judge(Reader::IsAlive, Ok(empty_ts), at(1), 30.0).0,
            Verdict::BadTimestamp
        );
    }

    #[test]
    fn unparsable_naive_missing_and_torn_are_dead() {
        let naive = file(&isoformat_naive(at(1)));
        assert_eq!(
            judge(Reader::IsAlive, Ok(&naive), at(1), 30.0).0,
            Verdict::Naive
        );
        assert_eq!(
            judge(Reader::Watchdog, Ok(&naive), at(1), 30.0).0,
            Verdict::Naive
        );
        let full = file(&isoformat(at(1)));
        let torn = &full[..full.len() / 2];
        assert_eq!(
            judge(Reader::IsAlive, Ok(torn), at(1), 30.0).0,
            Verdict::Unparsable
        );
        assert_eq!(
            judge(Reader::IsAlive, Ok(b""), at(1), 30.0).0,
            Verdict::Unparsable
        );
        assert_eq!(
            judge(Reader::IsAlive, Err(Errno::Enoent), at(1), 30.0).0,
            Verdict::Missing
        );
        assert_eq!(
            judge(Reader::IsAlive, Ok(b"[1]"), at(1), 30.0).0,
            Verdict::NotAnObject
        );
        let num_ts = br#"{"timestamp": 5, "pid": 1, "hostname": "h"}"#;
        assert_eq!(
            judge(Reader::IsAlive, Ok(num_ts), at(1), 30.0).0,
            Verdict::BadTimestamp
        );
    }

    #[test]
    fn temp_name_replaces_the_last_suffix() {
        assert_eq!(temp_path("/run/bot.heartbeat"), "/run/bot.tmp");
        assert_eq!(temp_path("/run/bot.json"), "/run/bot.tmp");
        assert_eq!(temp_path("/run/bot"), "/run/bot.tmp");
        assert_eq!(temp_path("/run/a.b.c"), "/run/a.b.tmp");
        assert_eq!(temp_path("/run/.hb"), "/run/.hb.tmp");
        assert_eq!(parent_dir("/run/x/bot.json"), "/run/x");
    }

    #[test]
    fn render_is_json_dumps_indent_2() {
        let text = String::from_utf8(render("T", 7, "h1")).unwrap();
        assert_eq!(
            text,
            "{\n  \"timestamp\": \"T\",\n  \"pid\": 7,\n  \"hostname\": \"h1\",\n  \"metadata\": {}\n}"
        );
    }
}

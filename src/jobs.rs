//! Spreading independent runs over threads (`--jobs`) and machines
//! (`--shard`), so that the result never depends on either: every run is
//! deterministic from its own inputs, and results are put back in input
//! order before anything is written (docs/cli.md, "Jobs and shards").

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most threads `--jobs` may ask for.
pub const MAX_JOBS: usize = 1024;
/// Most shards `--shard` may split work into.
pub const MAX_SHARDS: usize = 100_000;

/// The environment variable a Kubernetes Indexed Job sets to the pod's
/// index; it gives `i` when `--shard` says only `/n`.
pub const INDEX_VAR: &str = "JOB_COMPLETION_INDEX";

/// `--jobs N`: at least 1, at most [`MAX_JOBS`]; `None` is every core.
pub fn resolve_jobs(jobs: Option<usize>) -> Result<usize, String> {
    match jobs {
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_JOBS))),
        Some(0) => Err("--jobs 0: expected at least 1 thread".into()),
        Some(n) if n > MAX_JOBS => Err(format!(
            "--jobs {n}: at most {MAX_JOBS} threads (the limit MAX_JOBS)"
        )),
        Some(n) => Ok(n),
    }
}

/// One slice of a deterministic list of work: shard `index` of `count`
/// (0-based, as `JOB_COMPLETION_INDEX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole list.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The items of a list of `len` this shard runs: a contiguous range,
    /// `index * len / count .. (index + 1) * len / count`, so the shards
    /// cover the list once, in order, and differ in size by at most one.
    pub fn range(self, len: usize) -> std::ops::Range<usize> {
        let at = |i: usize| (i as u128 * len as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// Parse `--shard`: `i/n`, or `/n` with `i` from [`INDEX_VAR`]
    /// (`index_var` is its value, if set).
    pub fn parse(text: &str, index_var: Option<&str>) -> Result<Shard, String> {
        let expected = "expected i/n with 0 <= i < n (0-based), or /n with the index in \
                        JOB_COMPLETION_INDEX";
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("--shard {text:?}: {expected}"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("--shard {text:?}: {n:?} is not a count; {expected}"))?;
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "--shard {text:?}: the count must be 1..={MAX_SHARDS} (the limit MAX_SHARDS)"
            ));
        }
        let (index_text, from) = if i.trim().is_empty() {
            match index_var {
                Some(v) => (v, INDEX_VAR),
                None => {
                    return Err(format!(
                        "--shard {text:?} gives no index and {INDEX_VAR} is not set; {expected}"
                    ))
                }
            }
        } else {
            (i, "--shard")
        };
        let index: usize = index_text
            .trim()
            .parse()
            .map_err(|_| format!("{from} {index_text:?}: not an index; {expected}"))?;
        if index >= count {
            return Err(format!(
                "{from} {index}: shards of {count} are numbered 0..{}; {expected}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// [`Shard::parse`] with [`INDEX_VAR`] from the environment.
    pub fn from_arg(text: &str) -> Result<Shard, String> {
        let var = std::env::var(INDEX_VAR).ok();
        Shard::parse(text, var.as_deref())
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        Shard::parse(s, None)
    }
}

/// `f(0)`, ..., `f(n - 1)` on `jobs` threads, in index order whatever
/// the threads' timing; `tick` is called after each (for a progress bar).
pub fn map<T: Send>(
    n: usize,
    jobs: usize,
    f: impl Fn(usize) -> T + Sync,
    tick: impl Fn() + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, T)>> = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let out = f(i);
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, out));
                tick();
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_list_once_in_order() {
        for len in [0, 1, 5, 17, 1800] {
            for count in 1..=7 {
                let mut all = Vec::new();
                for index in 0..count {
                    all.extend(Shard { index, count }.range(len));
                }
                assert_eq!(all, (0..len).collect::<Vec<_>>(), "{len} in {count}");
            }
        }
    }

    #[test]
    fn shard_arguments() {
        assert_eq!(Shard::parse("1/3", None), Ok(Shard { index: 1, count: 3 }));
        assert_eq!(
            Shard::parse("/3", Some("2")),
            Ok(Shard { index: 2, count: 3 })
        );
        assert_eq!(
            Shard::parse("0/3", Some("2")),
            Ok(Shard { index: 0, count: 3 })
        );
        for bad in ["3/3", "1", "a/3", "1/0", "/3", "1/x"] {
            let e = Shard::parse(bad, None).expect_err(bad);
            assert!(e.contains("expected") || e.contains("count"), "{e}");
        }
        let e = Shard::parse("/3", Some("7")).unwrap_err();
        assert!(e.contains("JOB_COMPLETION_INDEX 7"), "{e}");
    }

    #[test]
    fn map_keeps_index_order_for_any_job_count() {
        let one = map(100, 1, |i| i * i, || {});
        for jobs in [2, 3, 8] {
            assert_eq!(map(100, jobs, |i| i * i, || {}), one);
        }
        assert_eq!(map(0, 4, |i| i, || {}), Vec::<usize>::new());
    }

    #[test]
    fn jobs_bounds() {
        assert!(resolve_jobs(Some(0)).is_err());
        assert!(resolve_jobs(Some(MAX_JOBS + 1))
            .unwrap_err()
            .contains("MAX_JOBS"));
        assert_eq!(resolve_jobs(Some(2)), Ok(2));
        assert!(resolve_jobs(None).unwrap() >= 1);
    }
}

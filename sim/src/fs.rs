//! The filesystem medium: one disk per host, shared by every process on it.
//!
//! A machine asks for a file operation with [`crate::Outbox::file`] and
//! gets its outcome as a [`FileDone`], handed back through
//! [`crate::Machine::file_done`] as an `Input::Recv` from the node itself
//! (so machines that never touch files match on the inputs they always
//! did). The operations are the four a state-file heartbeat makes:
//! `mkdir -p`, write a whole file (`open(O_TRUNC)` then `write`), rename
//! over (`rename(2)`, atomic) and read a whole file.
//!
//! # Time
//!
//! `mkdir`, `rename` and `read` answer at once. A write truncates the file
//! at once (as `open(O_TRUNC)` does) and its data lands, and its answer
//! comes, after the disk's write time (zero unless a `slow-disk` fault
//! set one): a reader in between sees an empty file. If the writing
//! process is gone by then, the data never lands.
//!
//! # Durability
//!
//! Nothing here calls `fsync`, as the modelled upstream never does
//! (kstlib `Heartbeat.beat`: `write_text` then `replace`). What a
//! [`Fault::PowerLoss`](crate::Fault::PowerLoss) keeps follows the
//! host's [`Durability`], after turmoil's `unstable-fs` model (writes are
//! pending until synced; a crash keeps the synced state) with ext4's rules
//! for when un-fsynced data is synced anyway:
//!
//! - a file's data is synced once it is [`DIRTY_EXPIRE`] old (the
//!   kernel's `dirty_expire_centisecs`, 30 s by default);
//! - [`Durability::AutoDaAlloc`] (ext4 `data=ordered` with its default
//!   `auto_da_alloc`): a rename over an existing file syncs the renamed
//!   file's data first, so a reader after the power loss sees the old or
//!   the new content, never an empty file;
//! - [`Durability::NoAutoDaAlloc`] (ext4 mounted `noauto_da_alloc`, in
//!   any `data=` mode): renames do not wait for data, so a file whose data
//!   is younger than `DIRTY_EXPIRE` comes back empty. (`data=writeback`
//!   alone does not do this: `auto_da_alloc` is on by default in every
//!   `data=` mode.)
//!
//! Metadata (directories, names, renames) is taken as committed: after a
//! power loss a reader finds the names the last operations left, with the
//! data the rules above keep (the journal's 5 s commit window is not
//! modelled; this is the "new" half of ext4's "old or new").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::{Duration, Timestamp};
use crate::NodeId;

/// How long un-fsynced data may stay dirty before the kernel writes it
/// back (`vm.dirty_expire_centisecs` = 3000).
pub const DIRTY_EXPIRE: Duration = Duration::from_secs(30);

/// Longest path accepted in an operation (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Most files one disk holds: a machine that creates more gets `ENOSPC`.
pub const MAX_FILES: usize = 10_000;

/// An operation's error, as `errno` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Errno {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the disk is full.
    Enospc,
    /// `EACCES`: permission denied.
    Eacces,
    /// `ENOENT`: no such file or directory.
    Enoent,
    /// `ENAMETOOLONG`: over [`MAX_PATH_BYTES`].
    Enametoolong,
    /// `EEXIST`: a file where a directory should be.
    Eexist,
    /// `EISDIR`: a directory where a file should be.
    Eisdir,
}

impl Errno {
    pub fn name(self) -> &'static str {
        match self {
            Errno::Eio => "EIO",
            Errno::Enospc => "ENOSPC",
            Errno::Eacces => "EACCES",
            Errno::Enoent => "ENOENT",
            Errno::Enametoolong => "ENAMETOOLONG",
            Errno::Eexist => "EEXIST",
            Errno::Eisdir => "EISDIR",
        }
    }
    /// The errors a `disk-error` fault may inject.
    pub fn injectable(name: &str) -> Option<Errno> {
        [Errno::Eio, Errno::Enospc, Errno::Eacces]
            .into_iter()
            .find(|e| e.name() == name)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a machine asks of its host's disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// `mkdir -p`: the directory and every missing parent.
    MkdirAll(String),
    /// Create or truncate the file, then write `data` (`Path.write_text`).
    Write { path: String, data: Vec<u8> },
    /// `rename(2)`: atomically replaces `to` if it exists.
    Rename { from: String, to: String },
    /// The whole file.
    Read(String),
}

impl FileOp {
    fn label(&self) -> &'static str {
        match self {
            FileOp::MkdirAll(_) => "mkdir",
            FileOp::Write { .. } => "write",
            FileOp::Rename { .. } => "rename",
            FileOp::Read(_) => "read",
        }
    }
    fn path(&self) -> &str {
        match self {
            FileOp::MkdirAll(p) | FileOp::Write { path: p, .. } | FileOp::Read(p) => p,
            FileOp::Rename { to, .. } => to,
        }
    }
}

/// The outcome of one operation: a read's data, or nothing; or the error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDone {
    pub token: u64,
    pub result: Result<Option<Vec<u8>>, Errno>,
}

/// What power loss keeps of un-fsynced data (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// ext4's default: `data=ordered` with `auto_da_alloc`.
    #[default]
    AutoDaAlloc,
    /// ext4 mounted `noauto_da_alloc`.
    NoAutoDaAlloc,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::AutoDaAlloc => "auto_da_alloc",
            Durability::NoAutoDaAlloc => "noauto_da_alloc",
        }
    }
    pub fn parse(s: &str) -> Option<Durability> {
        [Durability::AutoDaAlloc, Durability::NoAutoDaAlloc]
            .into_iter()
            .find(|d| d.name() == s)
    }
}

#[derive(Clone, Debug)]
struct File {
    /// Its inode: a write in flight goes to the inode it opened, whatever
    /// name it has by the time the data lands.
    ino: u64,
    data: Vec<u8>,
    /// When its data was last written (the write completed).
    written_at: Timestamp,
    /// Its data is on the disk whatever happens.
    synced: bool,
}

/// One host's disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    durability: Durability,
    dirs: BTreeSet<String>,
    files: BTreeMap<String, File>,
    write_time: Duration,
    /// Injected write errors, by path (`None`: every path).
    errors: BTreeMap<Option<String>, Errno>,
    /// The next write to a matching path lands half written.
    torn: BTreeSet<Option<String>>,
    next_ino: u64,
}

/// Whether `path` is `prefix` or under it; `None` matches everything.
fn under(prefix: &Option<String>, path: &str) -> bool {
    match prefix {
        None => true,
        Some(p) => {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/') || p.ends_with('/'))
        }
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

/// What the engine must do with an operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answer at once.
    Done(Result<Option<Vec<u8>>, Errno>),
    /// The write's data lands in inode `ino`, and its answer comes,
    /// after this long.
    Later {
        after: Duration,
        ino: u64,
        data: Vec<u8>,
    },
    /// The process dies here (`kill-before-rename`).
    Kill,
}

/// Every host's disk, and which host each node runs on.
#[derive(Clone, Debug, Default)]
pub struct Disks {
    /// `host_of[node]`: an index into `hosts`.
    host_of: Vec<usize>,
    /// `hosts[h]`: the disk host `h`'s processes see (its own, or another
    /// host's it mounts).
    hosts: Vec<usize>,
    disks: Vec<Disk>,
    /// Nodes whose next rename kills them instead.
    kill_before_rename: BTreeSet<NodeId>,
}

impl Disks {
    /// `host_of[node]` is the node's host; `hosts[h]` its disk's
    /// durability. A node past the end of `host_of` has no disk (its file
    /// operations fail with `EIO`).
    pub fn new(host_of: Vec<usize>, hosts: Vec<Durability>) -> Self {
        let n = hosts.len();
        Disks {
            host_of,
            hosts: (0..n).collect(),
            disks: hosts
                .into_iter()
                .map(|durability| Disk {
                    durability,
                    ..Disk::default()
                })
                .collect(),
            kill_before_rename: BTreeSet::new(),
        }
    }

    /// Host `h` sees host `owner`'s disk (a network mount) instead of its
    /// own; faults on `owner`'s disk apply, and a power loss of `h` loses
    /// nothing of it.
    pub fn mount(&mut self, h: usize, owner: usize) {
        if owner < self.disks.len() {
            if let Some(slot) = self.hosts.get_mut(h) {
                *slot = owner;
            }
        }
    }

    /// How long every write takes on host `h`'s own disk.
    pub fn with_write_time(mut self, h: usize, d: Duration) -> Self {
        self.set_write_time(h, d);
        self
    }

    /// The node's host, if it has one.
    pub fn host(&self, node: NodeId) -> Option<usize> {
        self.host_of.get(node.0).copied()
    }

    /// The nodes on host `h`.
    pub fn nodes_on(&self, h: usize) -> impl Iterator<Item = NodeId> + '_ {
        self.host_of
            .iter()
            .enumerate()
            .filter(move |(_, x)| **x == h)
            .map(|(i, _)| NodeId(i))
    }

    fn disk(&mut self, node: NodeId) -> Option<&mut Disk> {
        let h = self.host(node)?;
        let d = *self.hosts.get(h)?;
        self.disks.get_mut(d)
    }

    /// Carry out `op` for `node` at `now`. A node with no host has no disk:
    /// every operation fails with `EIO`.
    pub fn apply(&mut self, now: Timestamp, node: NodeId, op: FileOp) -> Outcome {
        if op.path().len() > MAX_PATH_BYTES {
            return Outcome::Done(Err(Errno::Enametoolong));
        }
        if matches!(op, FileOp::Rename { .. }) && self.kill_before_rename.remove(&node) {
            return Outcome::Kill;
        }
        let Some(disk) = self.disk(node) else {
            return Outcome::Done(Err(Errno::Eio));
        };
        disk.apply(now, op)
    }

    /// A slow write's data lands (its process is still there) at offset 0
    /// of the inode it opened, under whatever name it has now (or none:
    /// a file renamed over is gone, and so is what lands in it). Data
    /// past the end of `data` stays: two writers of one inode interleave.
    pub fn land(&mut self, now: Timestamp, node: NodeId, ino: u64, data: Vec<u8>) {
        let Some(disk) = self.disk(node) else { return };
        if let Some(file) = disk.files.values_mut().find(|f| f.ino == ino) {
            if file.data.len() < data.len() {
                file.data.resize(data.len(), 0);
            }
            file.data[..data.len()].copy_from_slice(&data);
            file.written_at = now;
            file.synced = false;
        }
    }

    /// The disk host `h` sees (its own, or the one it mounts).
    fn seen(&mut self, h: usize) -> Option<&mut Disk> {
        let d = *self.hosts.get(h)?;
        self.disks.get_mut(d)
    }

    /// Writes on the disk host `host` sees take `d` from now on.
    pub fn set_write_time(&mut self, host: usize, d: Duration) {
        if let Some(disk) = self.seen(host) {
            disk.write_time = d;
        }
    }

    /// Inject (`Some`) or clear (`None`) write errors under `path`
    /// (`None`: the whole disk; clearing it clears every error).
    pub fn set_error(&mut self, host: usize, path: Option<String>, errno: Option<Errno>) {
        let Some(disk) = self.seen(host) else {
            return;
        };
        match (errno, path) {
            (Some(e), path) => {
                disk.errors.insert(path, e);
            }
            (None, None) => disk.errors.clear(),
            (None, path) => {
                disk.errors.remove(&path);
            }
        }
    }

    pub fn tear_next_write(&mut self, host: usize, path: Option<String>) {
        if let Some(disk) = self.seen(host) {
            disk.torn.insert(path);
        }
    }

    pub fn kill_before_next_rename(&mut self, node: NodeId) {
        self.kill_before_rename.insert(node);
    }

    /// The host loses power: un-synced data goes as its durability says.
    pub fn power_loss(&mut self, now: Timestamp, host: usize) {
        // Only the disk the host owns: one it mounts is another's.
        if let Some(disk) = self
            .disks
            .get_mut(host)
            .filter(|_| self.hosts.get(host) == Some(&host))
        {
            for file in disk.files.values_mut() {
                let aged = now.saturating_since(file.written_at) >= DIRTY_EXPIRE;
                if !(file.synced || aged) {
                    file.data.clear();
                }
                file.synced = true;
            }
        }
    }

    /// A file's data as a reader would see it now (tests).
    pub fn peek(&self, host: usize, path: &str) -> Option<&[u8]> {
        let file = self.disks.get(host)?.files.get(path)?;
        Some(&file.data)
    }
}

impl Disk {
    fn apply(&mut self, now: Timestamp, op: FileOp) -> Outcome {
        match op {
            FileOp::MkdirAll(path) => {
                // `Path.mkdir(parents=True, exist_ok=True)` over a file (or
                // under one): `FileExistsError`, re-raised since it is not
                // a directory.
                let mut p = path.as_str();
                while p != "/" && p != "." && !p.is_empty() {
                    if self.files.contains_key(p) {
                        return Outcome::Done(Err(Errno::Eexist));
                    }
                    p = parent(p);
                }
                let mut p = path.as_str();
                while p != "/" && p != "." && !p.is_empty() {
                    self.dirs.insert(p.to_string());
                    p = parent(p);
                }
                Outcome::Done(Ok(None))
            }
            FileOp::Write { path, data } => {
                if self.dirs.contains(&path) {
                    return Outcome::Done(Err(Errno::Eisdir));
                }
                let dir = parent(&path);
                if dir != "/" && dir != "." && !self.dirs.contains(dir) {
                    return Outcome::Done(Err(Errno::Enoent));
                }
                if let Some((_, e)) = self.errors.iter().find(|(p, _)| under(p, &path)) {
                    return Outcome::Done(Err(*e));
                }
                if !self.files.contains_key(&path) && self.files.len() >= MAX_FILES {
                    return Outcome::Done(Err(Errno::Enospc));
                }
                let torn = self.torn.iter().find(|p| under(p, &path)).cloned();
                let data = match torn {
                    Some(key) => {
                        self.torn.remove(&key);
                        let half = data.len() / 2;
                        data[..half].to_vec()
                    }
                    None => data,
                };
                // `open(O_CREAT | O_TRUNC)`: the same inode if the name
                // exists, emptied; the data lands later on a slow disk.
                let ino = match self.files.get(&path) {
                    Some(f) => f.ino,
                    None => {
                        self.next_ino += 1;
                        self.next_ino
                    }
                };
                let file = File {
                    ino,
                    data: Vec::new(),
                    written_at: now,
                    synced: false,
                };
                if self.write_time == Duration::ZERO {
                    self.files.insert(path, File { data, ..file });
                    return Outcome::Done(Ok(None));
                }
                self.files.insert(path, file);
                Outcome::Later {
                    after: self.write_time,
                    ino,
                    data,
                }
            }
            FileOp::Rename { from, to } => {
                if self.dirs.contains(&to) {
                    return Outcome::Done(Err(Errno::Eisdir));
                }
                let Some(mut file) = self.files.remove(&from) else {
                    return Outcome::Done(Err(Errno::Enoent));
                };
                let over = self.files.contains_key(&to);
                if over && self.durability == Durability::AutoDaAlloc {
                    file.synced = true;
                }
                self.files.insert(to, file);
                Outcome::Done(Ok(None))
            }
            FileOp::Read(path) => match self.files.get(&path) {
                Some(f) => Outcome::Done(Ok(Some(f.data.clone()))),
                None if self.dirs.contains(&path) => Outcome::Done(Err(Errno::Eisdir)),
                None => Outcome::Done(Err(Errno::Enoent)),
            },
        }
    }
}

/// The net-level trace text of an operation and its outcome:
/// (reason, msg).
pub fn describe(op: &FileOp, outcome: &Outcome) -> (String, String) {
    let what = match op {
        FileOp::Rename { from, to } => format!("{from} -> {to}"),
        other => other.path().to_string(),
    };
    let reason = match outcome {
        Outcome::Done(Err(e)) => format!("{} failed: {e}", op.label()),
        Outcome::Kill => "killed before rename".to_string(),
        _ => op.label().to_string(),
    };
    (reason, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::ZERO + Duration::from_secs(s)
    }

    fn disks(d: Durability) -> Disks {
        Disks::new(vec![0, 0], vec![d])
    }

    fn write(ds: &mut Disks, now: Timestamp, path: &str, data: &str) -> Outcome {
        ds.apply(
            now,
            NodeId(0),
            FileOp::Write {
                path: path.into(),
                data: data.into(),
            },
        )
    }

    fn rename(ds: &mut Disks, now: Timestamp, from: &str, to: &str) -> Outcome {
        ds.apply(
            now,
            NodeId(0),
            FileOp::Rename {
                from: from.into(),
                to: to.into(),
            },
        )
    }

    fn read(ds: &mut Disks, node: usize, path: &str) -> Outcome {
        ds.apply(t(0), NodeId(node), FileOp::Read(path.into()))
    }

    #[test]
    fn processes_on_one_host_share_its_disk() {
        let mut ds = disks(Durability::AutoDaAlloc);
        assert_eq!(
            write(&mut ds, t(0), "/run/a", "x"),
            Outcome::Done(Err(Errno::Enoent))
        );
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/run".into()));
        assert_eq!(write(&mut ds, t(0), "/run/a", "x"), Outcome::Done(Ok(None)));
        assert_eq!(
            read(&mut ds, 1, "/run/a"),
            Outcome::Done(Ok(Some(b"x".to_vec())))
        );
        assert_eq!(
            read(&mut ds, 1, "/run/b"),
            Outcome::Done(Err(Errno::Enoent))
        );
    }

    #[test]
    fn files_and_directories_do_not_mix() {
        let mut ds = disks(Durability::AutoDaAlloc);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        write(&mut ds, t(0), "/r/f", "x");
        assert_eq!(
            ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r/f/g".into())),
            Outcome::Done(Err(Errno::Eexist))
        );
        assert_eq!(
            write(&mut ds, t(0), "/r", "x"),
            Outcome::Done(Err(Errno::Eisdir))
        );
        assert_eq!(read(&mut ds, 0, "/r"), Outcome::Done(Err(Errno::Eisdir)));
    }

    #[test]
    fn errors_match_a_path_or_the_whole_disk_until_cleared() {
        let mut ds = disks(Durability::AutoDaAlloc);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/run/x".into()));
        ds.set_error(0, Some("/run/x".into()), Some(Errno::Eacces));
        assert_eq!(
            write(&mut ds, t(0), "/run/x/a", "1"),
            Outcome::Done(Err(Errno::Eacces))
        );
        // `/run/xy` is not under `/run/x`.
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/run/xy".into()));
        assert_eq!(
            write(&mut ds, t(0), "/run/xy/a", "1"),
            Outcome::Done(Ok(None))
        );
        ds.set_error(0, None, Some(Errno::Enospc));
        assert_eq!(
            write(&mut ds, t(0), "/run/xy/a", "1"),
            Outcome::Done(Err(Errno::Enospc))
        );
        ds.set_error(0, None, None);
        assert_eq!(
            write(&mut ds, t(0), "/run/x/a", "1"),
            Outcome::Done(Ok(None))
        );
    }

    #[test]
    fn a_torn_write_lands_half_once() {
        let mut ds = disks(Durability::AutoDaAlloc);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        ds.tear_next_write(0, None);
        write(&mut ds, t(0), "/r/a", "abcdefg");
        assert_eq!(ds.peek(0, "/r/a"), Some(&b"abc"[..]));
        write(&mut ds, t(0), "/r/a", "abcdefg");
        assert_eq!(ds.peek(0, "/r/a"), Some(&b"abcdefg"[..]));
    }

    #[test]
    fn a_slow_write_truncates_first_and_lands_later() {
        let mut ds = disks(Durability::AutoDaAlloc);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        write(&mut ds, t(0), "/r/a", "old");
        ds.set_write_time(0, Duration::from_ms(250));
        let out = write(&mut ds, t(1), "/r/a", "new");
        assert_eq!(
            out,
            Outcome::Later {
                after: Duration::from_ms(250),
                ino: 1,
                data: b"new".to_vec()
            }
        );
        assert_eq!(ds.peek(0, "/r/a"), Some(&b""[..]));
        ds.land(t(1), NodeId(0), 1, b"new".to_vec());
        assert_eq!(ds.peek(0, "/r/a"), Some(&b"new"[..]));
    }

    #[test]
    fn a_write_in_flight_lands_in_the_renamed_inode() {
        let mut ds = disks(Durability::AutoDaAlloc);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        ds.set_write_time(0, Duration::from_ms(250));
        // Two writers open one temp name, one renames it first.
        let a = write(&mut ds, t(1), "/r/x.tmp", "aaaa");
        let b = write(&mut ds, t(1), "/r/x.tmp", "bb");
        let (Outcome::Later { ino: ia, .. }, Outcome::Later { ino: ib, .. }) = (a, b) else {
            panic!("slow writes")
        };
        assert_eq!(ia, ib);
        ds.land(t(1), NodeId(0), ia, b"aaaa".to_vec());
        assert_eq!(
            rename(&mut ds, t(1), "/r/x.tmp", "/r/x.heartbeat"),
            Outcome::Done(Ok(None))
        );
        ds.land(t(1), NodeId(1), ib, b"bb".to_vec());
        assert_eq!(ds.peek(0, "/r/x.heartbeat"), Some(&b"bbaa"[..]));
        assert_eq!(
            rename(&mut ds, t(1), "/r/x.tmp", "/r/x.json"),
            Outcome::Done(Err(Errno::Enoent))
        );
    }

    #[test]
    fn a_mounted_disk_is_the_owners() {
        let mut ds = Disks::new(vec![0, 1], vec![Durability::AutoDaAlloc; 2]);
        ds.mount(1, 0);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        write(&mut ds, t(0), "/r/a", "x");
        assert_eq!(
            read(&mut ds, 1, "/r/a"),
            Outcome::Done(Ok(Some(b"x".to_vec())))
        );
    }

    #[test]
    fn kill_before_rename_is_one_shot_and_leaves_the_target() {
        let mut ds = disks(Durability::AutoDaAlloc);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        write(&mut ds, t(0), "/r/a.tmp", "new");
        ds.kill_before_next_rename(NodeId(0));
        assert_eq!(rename(&mut ds, t(0), "/r/a.tmp", "/r/a"), Outcome::Kill);
        assert_eq!(ds.peek(0, "/r/a"), None);
        assert_eq!(
            rename(&mut ds, t(0), "/r/a.tmp", "/r/a"),
            Outcome::Done(Ok(None))
        );
        assert_eq!(ds.peek(0, "/r/a.tmp"), None);
    }

    /// Write `v1` then `v2` through a temp file, the second rename over
    /// the first, at `t(40)` and `t(45)`; power lost at `t(50)`.
    fn power_loss_after_two_beats(d: Durability) -> Option<Vec<u8>> {
        let mut ds = disks(d);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        write(&mut ds, t(40), "/r/a.tmp", "v1");
        rename(&mut ds, t(40), "/r/a.tmp", "/r/a");
        write(&mut ds, t(45), "/r/a.tmp", "v2");
        rename(&mut ds, t(45), "/r/a.tmp", "/r/a");
        ds.power_loss(t(50), 0);
        ds.peek(0, "/r/a").map(<[u8]>::to_vec)
    }

    #[test]
    fn power_loss_keeps_a_rename_over_in_auto_da_alloc() {
        assert_eq!(
            power_loss_after_two_beats(Durability::AutoDaAlloc),
            Some(b"v2".to_vec())
        );
    }

    #[test]
    fn power_loss_empties_young_data_without_auto_da_alloc() {
        assert_eq!(
            power_loss_after_two_beats(Durability::NoAutoDaAlloc),
            Some(Vec::new())
        );
    }

    #[test]
    fn power_loss_keeps_data_older_than_dirty_expire() {
        let mut ds = disks(Durability::NoAutoDaAlloc);
        ds.apply(t(0), NodeId(0), FileOp::MkdirAll("/r".into()));
        write(&mut ds, t(10), "/r/a", "v1");
        ds.power_loss(t(39), 0);
        assert_eq!(ds.peek(0, "/r/a"), Some(&b""[..]));
        write(&mut ds, t(40), "/r/a", "v2");
        ds.power_loss(t(70), 0);
        assert_eq!(ds.peek(0, "/r/a"), Some(&b"v2"[..]));
    }
}

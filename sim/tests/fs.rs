//! The filesystem medium through the engine: a slow write's answer and
//! data, a process gone before its write lands, a paused process, a kill
//! between a temp write and its rename, a power loss, and a stopped
//! process that lingers until its write lands (`Outbox::linger`).

use std::borrow::Cow;

use heartsim_sim::fs::{Disks, Durability, FileDone, FileOp};
use heartsim_sim::net::{LinkConfig, Network};
use heartsim_sim::trace::Level;
use heartsim_sim::{
    Clock, Deadline, Duration, Engine, Fault, Host, Input, Limits, Machine, NodeId, NodeSpec, Now,
    Outbox, Timestamp,
};

/// At start: mkdir /d, write /d/x.tmp, rename it to /d/x; records each
/// answer as `done <token>` (or `failed <token> <errno>`). With
/// `lingers`, a stop before the rename is answered with `linger`, and the
/// process exits once the rename is done.
#[derive(Default)]
struct Saver {
    lingers: bool,
    stopping: bool,
    renamed: bool,
}

impl Machine for Saver {
    type Msg = FileDone;
    fn handle(&mut self, _now: Now, input: Input<FileDone>, out: &mut Outbox<FileDone>) {
        match input {
            Input::Start => out.file(FileOp::MkdirAll("/d".into()), 1),
            Input::Stop if self.lingers && !self.renamed => {
                self.stopping = true;
                out.linger();
            }
            Input::Recv { msg, .. } => {
                let text = match &msg.result {
                    Ok(_) => format!("done {}", msg.token),
                    Err(e) => format!("failed {} {e}", msg.token),
                };
                out.record("file", None, None, Some(Cow::Owned(text)));
                if msg.token == 3 {
                    self.renamed = true;
                    if self.stopping {
                        out.exit();
                    }
                }
                match (msg.token, msg.result) {
                    (1, Ok(_)) => out.file(
                        FileOp::Write {
                            path: "/d/x.tmp".into(),
                            data: b"payload".to_vec(),
                        },
                        2,
                    ),
                    (2, Ok(_)) => out.file(
                        FileOp::Rename {
                            from: "/d/x.tmp".into(),
                            to: "/d/x".into(),
                        },
                        3,
                    ),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    fn poll_timeout(&self) -> Option<Deadline> {
        None
    }
    fn describe(_: &FileDone) -> Cow<'static, str> {
        Cow::Borrowed("file")
    }
    fn file_done(done: FileDone) -> Option<FileDone> {
        Some(done)
    }
}

fn host() -> Host {
    Host {
        index: 0,
        name: "box".into(),
    }
}

/// Run one saver on a disk whose writes take `write_ms`, with `faults`;
/// returns the decision lines and what /d/x and /d/x.tmp hold at the end.
fn run(
    write_ms: u64,
    durability: Durability,
    faults: Vec<(u64, Fault)>,
) -> (Vec<String>, Option<Vec<u8>>, Option<Vec<u8>>) {
    run_saver(false, write_ms, durability, faults)
}

fn run_saver(
    lingers: bool,
    write_ms: u64,
    durability: Durability,
    faults: Vec<(u64, Fault)>,
) -> (Vec<String>, Option<Vec<u8>>, Option<Vec<u8>>) {
    let nodes = vec![NodeSpec {
        name: "s".into(),
        clock: Clock::default(),
        start_at: Some(Timestamp::ZERO),
    }];
    let faults = faults
        .into_iter()
        .map(|(ms, f)| (Timestamp::ZERO + Duration::from_ms(ms), f))
        .collect();
    let limits = Limits {
        end: Timestamp::ZERO + Duration::from_secs(60),
        ..Limits::default()
    };
    let disks =
        Disks::new(vec![0], vec![durability]).with_write_time(0, Duration::from_ms(write_ms));
    let mut engine = Engine::new(
        nodes,
        Network::new(1, LinkConfig::default()),
        faults,
        limits,
        Level::Decision,
        |_| Saver {
            lingers,
            ..Saver::default()
        },
    )
    .with_disks(disks);
    engine.run().expect("within limits");
    let x = engine.disks().peek(0, "/d/x").map(<[u8]>::to_vec);
    let tmp = engine.disks().peek(0, "/d/x.tmp").map(<[u8]>::to_vec);
    let trace = engine.into_trace();
    let lines = trace
        .decisions()
        .filter(|r| r.kind != "start")
        .map(|r| format!("{} {} {}", r.t, r.kind, r.msg.as_deref().unwrap_or("")))
        .collect();
    (lines, x, tmp)
}

#[test]
fn a_slow_write_answers_after_the_write_time() {
    let (lines, x, tmp) = run(250, Durability::AutoDaAlloc, vec![]);
    assert_eq!(
        lines,
        [
            "0:00:00.000 file done 1",
            "0:00:00.250 file done 2",
            "0:00:00.250 file done 3",
        ]
    );
    assert_eq!(x.as_deref(), Some(&b"payload"[..]));
    assert_eq!(tmp, None);
}

#[test]
fn a_stopped_process_that_lingers_finishes_its_write_then_exits() {
    let (lines, x, tmp) = run_saver(
        true,
        250,
        Durability::AutoDaAlloc,
        vec![(100, Fault::Stop(NodeId(0)))],
    );
    assert_eq!(
        lines,
        [
            "0:00:00.000 file done 1",
            "0:00:00.100 stop ",
            "0:00:00.250 file done 2",
            "0:00:00.250 file done 3",
        ]
    );
    assert_eq!(x.as_deref(), Some(&b"payload"[..]));
    assert_eq!(tmp, None);
}

#[test]
fn a_stopped_process_that_does_not_linger_ends_at_once() {
    let (lines, x, tmp) = run_saver(
        false,
        250,
        Durability::AutoDaAlloc,
        vec![(100, Fault::Stop(NodeId(0)))],
    );
    assert_eq!(lines, ["0:00:00.000 file done 1", "0:00:00.100 stop "]);
    assert_eq!(x, None);
    assert_eq!(tmp.as_deref(), Some(&b""[..]));
}

#[test]
fn a_process_killed_mid_write_leaves_the_file_empty() {
    let (lines, x, tmp) = run(
        250,
        Durability::AutoDaAlloc,
        vec![(100, Fault::Kill(NodeId(0)))],
    );
    assert_eq!(lines, ["0:00:00.000 file done 1", "0:00:00.100 kill "]);
    assert_eq!(
        tmp.as_deref(),
        Some(&b""[..]),
        "O_TRUNC happened, the data never landed"
    );
    assert_eq!(x, None);
}

#[test]
fn a_paused_process_gets_its_answer_on_resume() {
    let (lines, x, _) = run(
        250,
        Durability::AutoDaAlloc,
        vec![
            (100, Fault::Pause(NodeId(0))),
            (5000, Fault::Resume(NodeId(0))),
        ],
    );
    assert_eq!(
        lines,
        [
            "0:00:00.000 file done 1",
            "0:00:00.100 pause ",
            "0:00:05.000 resume ",
            "0:00:05.000 file done 2",
            "0:00:05.000 file done 3",
        ]
    );
    assert_eq!(x.as_deref(), Some(&b"payload"[..]));
}

#[test]
fn kill_before_rename_dies_after_the_temp_write() {
    // Armed while the temp write is in flight: the rename that follows
    // it kills the process instead.
    let (lines, x, tmp) = run(
        250,
        Durability::AutoDaAlloc,
        vec![(100, Fault::KillBeforeRename(NodeId(0)))],
    );
    assert_eq!(
        lines,
        [
            "0:00:00.000 file done 1",
            "0:00:00.100 kill-before-rename ",
            "0:00:00.250 file done 2",
            "0:00:00.250 kill before rename",
        ]
    );
    assert_eq!(x, None);
    assert_eq!(tmp.as_deref(), Some(&b"payload"[..]));
}

#[test]
fn power_loss_ends_the_process_and_empties_young_unsynced_data() {
    let (lines, x, _) = run(
        0,
        Durability::NoAutoDaAlloc,
        vec![(10_000, Fault::PowerLoss { host: host() })],
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("0:00:10.000 power-loss box")
    );
    assert_eq!(
        x.as_deref(),
        Some(&b""[..]),
        "renamed 10 s before, not synced"
    );
    let (_, x, _) = run(
        0,
        Durability::NoAutoDaAlloc,
        vec![(40_000, Fault::PowerLoss { host: host() })],
    );
    assert_eq!(
        x.as_deref(),
        Some(&b"payload"[..]),
        "older than dirty_expire"
    );
    // auto_da_alloc: the rename replaced nothing, so nothing was flushed.
    let (_, x, _) = run(
        0,
        Durability::AutoDaAlloc,
        vec![(10_000, Fault::PowerLoss { host: host() })],
    );
    assert_eq!(x.as_deref(), Some(&b""[..]));
}

//! kstlib scenario files and the host/disk keys: bad input is an error at
//! file, line and column, never a panic.

use std::path::Path;

use heartsim::models::ALL;
use heartsim::scenario::Scenario;

const GOOD: &str = r#"version = 1

[scenario]
name = "ok"
model = "kstlib"
profile = "kstlib-threaded"
duration = "1m"

[[host]]
name = "box"

[[node]]
name = "w"
kind = "writer"
host = "box"
state_file = "/run/bot.heartbeat"
interval = 10

[[node]]
name = "m"
kind = "monitor"
host = "box"
state_file = "/run/bot.heartbeat"

[[fault]]
at = "20s"
kind = "disk-error"
host = "box"
errno = "EIO"
"#;

/// (line, column, message) of the error `source` gives.
fn error_of(source: &str) -> (usize, usize, String) {
    let err = Scenario::parse(ALL, Path::new("broken.toml"), source).expect_err("must be rejected");
    let d = err.diagnostic().expect("a diagnostic with a position");
    assert!(
        d.rendered
            .contains(&format!("broken.toml:{}:{}", d.line, d.column)),
        "file:line:col in\n{}",
        d.rendered
    );
    (d.line, d.column, d.message.clone())
}

fn line_of(source: &str, needle: &str) -> usize {
    source
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn the_good_file_parses_with_its_host() {
    let s = Scenario::parse(ALL, Path::new("good.toml"), GOOD).expect("valid");
    assert_eq!(s.hosts.len(), 1);
    assert_eq!(s.nodes[0].host, Some(0));
    assert_eq!(s.nodes[1].host, Some(0));
}

#[test]
fn unknown_fault_kind() {
    let src = GOOD.replace("kind = \"disk-error\"", "kind = \"disk-eror\"");
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "disk-eror"));
    assert!(msg.contains("unknown fault kind \"disk-eror\""), "{msg}");
}

#[test]
fn negative_interval() {
    let src = GOOD.replace("interval = 10", "interval = -2.5");
    let (line, col, msg) = error_of(&src);
    assert_eq!((line, col), (line_of(&src, "interval = -2.5"), 12));
    assert!(msg.contains("interval: -2.5 is negative"), "{msg}");
}

#[test]
fn a_file_fault_naming_a_host_that_does_not_exist() {
    let src = GOOD.replace("host = \"box\"\nerrno", "host = \"bx\"\nerrno");
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "host = \"bx\""));
    assert!(msg.contains("unknown host \"bx\""), "{msg}");
    assert!(msg.contains("box"), "suggests the near name: {msg}");
}

#[test]
fn two_hosts_with_one_name() {
    let src = GOOD.replace(
        "[[host]]\nname = \"box\"\n",
        "[[host]]\nname = \"box\"\n\n[[host]]\nname = \"box\"\n",
    );
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, 13);
    assert!(msg.contains("duplicate host name \"box\""), "{msg}");
}

#[test]
fn a_node_on_an_unknown_host() {
    let src = GOOD.replacen(
        "host = \"box\"\nstate_file",
        "host = \"nas\"\nstate_file",
        1,
    );
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "host = \"nas\""));
    assert!(msg.contains("unknown host \"nas\""), "{msg}");
}

#[test]
fn unknown_errno_and_durability() {
    let src = GOOD.replace("errno = \"EIO\"", "errno = \"EPERM\"");
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "EPERM"));
    assert!(msg.contains("expected EIO, ENOSPC or EACCES"), "{msg}");
    let src = GOOD.replace(
        "name = \"box\"\n",
        "name = \"box\"\ndurability = \"journal\"\n",
    );
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "journal"));
    assert!(msg.contains("auto_da_alloc"), "{msg}");
}

#[test]
fn a_hosted_node_cannot_crash_alone_or_have_its_own_drift() {
    let src = GOOD.replace(
        "kind = \"disk-error\"\nhost = \"box\"\nerrno = \"EIO\"",
        "kind = \"crash\"\nnode = \"w\"",
    );
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "node = \"w\""));
    assert!(msg.contains("runs on host \"box\""), "{msg}");
    let src = GOOD.replace("interval = 10", "interval = 10\nclock_drift_ppm = 5");
    let (_, _, msg) = error_of(&src);
    assert!(msg.contains("host's clock"), "{msg}");
}

#[test]
fn keys_of_another_kind_and_missing_state_file() {
    let src = GOOD.replace("interval = 10", "max_age = 10");
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "max_age = 10"));
    assert!(msg.contains("max_age is not a writer key"), "{msg}");
    let src = GOOD.replace(
        "kind = \"monitor\"\nhost = \"box\"\nstate_file = \"/run/bot.heartbeat\"",
        "kind = \"monitor\"\nhost = \"box\"",
    );
    let (_, _, msg) = error_of(&src);
    assert!(msg.contains("a monitor needs state_file"), "{msg}");
    let src = GOOD.replacen(
        "state_file = \"/run/bot.heartbeat\"",
        "state_file = \"run/bot\"",
        1,
    );
    let (_, _, msg) = error_of(&src);
    assert!(msg.contains("absolute path"), "{msg}");
}

#[test]
fn disk_keys_on_faults_that_take_none() {
    let src = GOOD.replace(
        "kind = \"disk-error\"\nhost = \"box\"\nerrno = \"EIO\"",
        "kind = \"kill\"\nnode = \"w\"\npath = \"/run\"",
    );
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "path = \"/run\""));
    assert!(msg.contains("takes no path"), "{msg}");
    let src = GOOD.replace(
        "kind = \"disk-error\"\nhost = \"box\"\nerrno = \"EIO\"",
        "kind = \"slow-disk\"\nhost = \"box\"\nwrite = \"25h\"",
    );
    let (_, _, msg) = error_of(&src);
    assert!(msg.contains("at most 24h"), "{msg}");
}

#[test]
fn kstlib_has_no_config() {
    let src = GOOD.replace("[[host]]", "[config]\nx = 1\n\n[[host]]");
    let (_, _, msg) = error_of(&src);
    assert!(msg.contains("kstlib has no [config]"), "{msg}");
}

#[test]
fn a_mount_of_a_mount_is_refused() {
    let src = GOOD.replace(
        "[[host]]\nname = \"box\"\n",
        "[[host]]\nname = \"box\"\ndisk_of = \"b\"\n\n[[host]]\nname = \"b\"\ndisk_of = \"box\"\n",
    );
    let (_, _, msg) = error_of(&src);
    assert!(msg.contains("disk_of"), "{msg}");
}

#[test]
fn host_faults_act_on_every_process_of_the_host() {
    use heartsim::sim::Fault;
    let src = GOOD.replace(
        "kind = \"disk-error\"\nhost = \"box\"\nerrno = \"EIO\"",
        "kind = \"clock-jump\"\nhost = \"box\"\nby = \"+2m\"\n\n[[fault]]\nat = \"30s\"\nkind = \"crash\"\nhost = \"box\"\n\n[[fault]]\nat = \"40s\"\nkind = \"restart\"\nhost = \"box\"",
    );
    let s = Scenario::parse(ALL, Path::new("hosts.toml"), &src).expect("valid");
    let kinds: Vec<String> = s
        .faults
        .iter()
        .map(|(t, f)| match f {
            Fault::ClockJump { node, by_us } => format!("{t} jump {} {by_us}", node.0),
            Fault::PowerLoss { host } => format!("{t} power-loss {}", host.name),
            Fault::Restart(n) => format!("{t} restart {}", n.0),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "0:00:20.000 jump 0 120000000",
            "0:00:20.000 jump 1 120000000",
            "0:00:30.000 power-loss box",
            "0:00:40.000 restart 0",
            "0:00:40.000 restart 1",
        ]
    );
    // Restarting the host while a process on it runs is impossible.
    let early = src.replace(
        "at = \"30s\"\nkind = \"crash\"\nhost = \"box\"",
        "at = \"30s\"\nkind = \"kill\"\nnode = \"w\"",
    );
    let err = Scenario::parse(ALL, Path::new("hosts.toml"), &early).expect_err("m still runs");
    assert!(err.to_string().contains("m is already running"), "{err}");
}

#[test]
fn a_negative_clock_offset_is_refused_at_its_value() {
    let src = GOOD.replace(
        "name = \"box\"\n",
        "name = \"box\"\nclock_offset = \"-2m\"\n",
    );
    let (line, _, msg) = error_of(&src);
    assert_eq!(line, line_of(&src, "clock_offset"));
    assert!(msg.contains("clock_offset must not be negative"), "{msg}");
    let ahead = GOOD.replace(
        "name = \"box\"\n",
        "name = \"box\"\nclock_offset = \"+2m\"\n",
    );
    Scenario::parse(ALL, Path::new("ok.toml"), &ahead).expect("ahead is fine");
}

#[test]
fn writeback_is_not_a_durability_mode() {
    // ext4 syncs a file renamed over another in every `data=` mode unless
    // mounted `noauto_da_alloc`: that is the mode that loses young data.
    let src = GOOD.replace(
        "name = \"box\"\n",
        "name = \"box\"\ndurability = \"writeback\"\n",
    );
    let (_, _, msg) = error_of(&src);
    assert!(msg.contains("noauto_da_alloc"), "{msg}");
}

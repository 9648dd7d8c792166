//! Broken scenario files get a clear error naming file, line, column and
//! what was expected; never a panic. The CLI exits 2 on them.

use std::path::Path;
use std::process::Command;

use heartsim::models::ALL;
use heartsim::scenario::Scenario;

const GOOD: &str = r#"version = 1

[scenario]
name = "ok"
model = "joinmarket-directory"
profile = "joinmarket-ng"
seed = 1
duration = "30m"

[[node]]
name = "dir"
kind = "directory"

[[node]]
name = "alice"
kind = "maker"
ping = true
behaviour = "silent"
"#;

/// Parse `source` and return (line, column, message, rendered).
fn error_of(source: &str) -> (usize, usize, String, String) {
    let err = Scenario::parse(ALL, Path::new("broken.toml"), source).expect_err("must be rejected");
    let d = err.diagnostic().expect("a diagnostic with a position");
    assert!(
        d.rendered.contains("broken.toml"),
        "rendered error names the file:\n{}",
        d.rendered
    );
    assert!(
        d.rendered
            .contains(&format!("broken.toml:{}:{}", d.line, d.column)),
        "rendered error has file:line:col:\n{}",
        d.rendered
    );
    (d.line, d.column, d.message.clone(), d.rendered.clone())
}

fn line_of(source: &str, needle: &str) -> usize {
    source
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle in source")
        + 1
}

#[test]
fn the_good_file_parses() {
    let s = Scenario::parse(ALL, Path::new("good.toml"), GOOD).expect("valid");
    assert_eq!(s.nodes.len(), 2);
}

#[test]
fn bad_toml_syntax() {
    let src = GOOD.replace("seed = 1", "seed = = 1");
    let (line, _, _, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "seed = = 1"));
}

#[test]
fn unknown_key_names_the_key_and_the_expected_ones() {
    let src = GOOD.replace("ping = true", "pingg = true");
    let (line, col, msg, _) = error_of(&src);
    assert_eq!((line, col), (line_of(&src, "pingg"), 1));
    assert!(msg.contains("unknown field `pingg`"), "{msg}");
    assert!(msg.contains("behaviour"), "lists the expected keys: {msg}");
}

#[test]
fn bad_duration_points_at_the_value() {
    let src = GOOD.replace("duration = \"30m\"", "duration = \"30 minutes\"");
    let (line, col, msg, rendered) = error_of(&src);
    assert_eq!(line, line_of(&src, "30 minutes"));
    assert_eq!(col, "duration = ".len() + 1);
    assert!(msg.contains("duration"), "{msg}");
    assert!(
        rendered.contains("30 minutes"),
        "shows the offending text: {rendered}"
    );
}

#[test]
fn float_duration_is_rejected_with_a_hint() {
    let src = GOOD.replace("duration = \"30m\"", "duration = \"1.5h\"");
    let (_, _, msg, _) = error_of(&src);
    assert!(msg.contains("whole numbers"), "{msg}");
}

#[test]
fn unknown_node_in_a_fault() {
    let src = format!("{GOOD}\n[[fault]]\nat = \"1m\"\nkind = \"crash\"\nnode = \"bob\"\n");
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "node = \"bob\""));
    assert!(
        msg.contains("unknown node \"bob\"") && msg.contains("alice"),
        "{msg}"
    );
}

#[test]
fn impossible_faults() {
    let heal = format!("{GOOD}\n[[fault]]\nat = \"1m\"\nkind = \"heal\"\n");
    let (line, _, msg, _) = error_of(&heal);
    assert_eq!(line, line_of(&heal, "kind = \"heal\""));
    assert!(msg.contains("heal without an active partition"), "{msg}");

    let restart = format!("{GOOD}\n[[fault]]\nat = \"1m\"\nkind = \"restart\"\nnode = \"alice\"\n");
    let (_, _, msg, _) = error_of(&restart);
    assert!(msg.contains("alice is already running"), "{msg}");

    // Crash then restart is fine; a second restart is not.
    let twice = format!(
        "{GOOD}\n[[fault]]\nat = \"1m\"\nkind = \"crash\"\nnode = \"alice\"\n\
         [[fault]]\nat = \"2m\"\nkind = \"restart\"\nnode = \"alice\"\n\
         [[fault]]\nat = \"3m\"\nkind = \"restart\"\nnode = \"alice\"\n"
    );
    let (line, _, msg, _) = error_of(&twice);
    assert_eq!(
        line,
        twice.lines().count() - 1,
        "points at the second restart"
    );
    assert!(msg.contains("already running"), "{msg}");
}

/// `GOOD` plus `[[fault]]` tables given as `(at, kind, extra lines)`.
fn with_faults(faults: &[(&str, &str, &str)]) -> String {
    let mut src = GOOD.to_string();
    for (at, kind, extra) in faults {
        src.push_str(&format!(
            "\n[[fault]]\nat = \"{at}\"\nkind = \"{kind}\"\n{extra}\n"
        ));
    }
    src
}

#[test]
fn impossible_link_and_pause_faults() {
    let link = "from = \"dir\"\nto = \"alice\"";
    let alice = "node = \"alice\"";
    for (faults, want) in [
        (
            vec![("1m", "release", link)],
            "release of dir->alice, which is not held or stalled",
        ),
        (
            vec![("1m", "hold", link), ("2m", "stall", link)],
            "dir->alice is already held or stalled",
        ),
        (
            vec![("1m", "resume", alice)],
            "alice is not paused at this time",
        ),
        (
            vec![("1m", "pause", alice), ("2m", "pause", alice)],
            "alice is paused at this time",
        ),
        (
            vec![("1m", "pause", alice), ("2m", "stop", alice)],
            "alice is paused at this time (resume it first",
        ),
        (
            vec![("1m", "crash", alice), ("2m", "pause", alice)],
            "alice is not running at this time",
        ),
    ] {
        let src = with_faults(&faults);
        let (line, _, msg, _) = error_of(&src);
        assert!(msg.contains(want), "{msg}");
        let last_kind = format!("kind = \"{}\"", faults.last().unwrap().1);
        let last_line = src
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == last_kind)
            .last()
            .unwrap()
            .0
            + 1;
        assert_eq!(line, last_line, "points at the offending fault: {msg}");
    }
    // A crash of a paused node is fine (SIGKILL works on a stopped process),
    // as are hold, release, hold again.
    let ok = with_faults(&[
        ("1m", "pause", alice),
        ("2m", "crash", alice),
        ("3m", "restart", alice),
        ("4m", "hold", link),
        ("5m", "release", link),
        ("6m", "stall", link),
    ]);
    Scenario::parse(ALL, Path::new("ok.toml"), &ok).expect("valid schedule");
}

#[test]
fn drift_and_reorder_are_checked() {
    let src = with_faults(&[("1m", "clock-drift", "node = \"dir\"\nppm = 600000")]);
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "ppm = 600000"));
    assert!(msg.contains("ppm must be within ±500000"), "{msg}");

    let src = with_faults(&[("1m", "clock-drift", "node = \"dir\"")]);
    let (_, _, msg, _) = error_of(&src);
    assert!(msg.contains("clock-drift needs ppm"), "{msg}");

    let src = GOOD.replace(
        "[[node]]\nname = \"dir\"",
        "[network]\nreorder = \"1/0\"\n\n[[node]]\nname = \"dir\"",
    );
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "reorder = "));
    assert!(msg.starts_with("reorder: expected a ratio"), "{msg}");

    let src = GOOD.replace(
        "[[node]]\nname = \"dir\"",
        "[network]\nreorder_delay = \"0s\"\n\n[[node]]\nname = \"dir\"",
    );
    let (_, _, msg, _) = error_of(&src);
    assert!(
        msg.contains("reorder_delay must be greater than zero"),
        "{msg}"
    );
}

#[test]
fn duplication_and_reordering_are_refused_on_streams() {
    for key in ["reorder", "duplicate"] {
        let src = GOOD.replace(
            "[[node]]\nname = \"dir\"",
            &format!("[network]\n{key} = \"1/10\"\n\n[[node]]\nname = \"dir\""),
        );
        let (line, _, msg, _) = error_of(&src);
        assert_eq!(line, line_of(&src, &format!("{key} = ")));
        assert!(msg.contains("speaks over connections (TCP)"), "{msg}");
    }
    // A zero ratio says nothing and stays valid.
    let src = GOOD.replace(
        "[[node]]\nname = \"dir\"",
        "[network]\nreorder = \"0/10\"\n\n[[node]]\nname = \"dir\"",
    );
    Scenario::parse(ALL, Path::new("ok.toml"), &src).expect("valid");
}

#[test]
fn unknown_invariant_lists_the_known_ones() {
    let src = GOOD.replace(
        "duration = \"30m\"",
        "duration = \"30m\"\ninvariants = [\"never-evicted\"]",
    );
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "invariants = "));
    assert!(msg.contains("unknown invariant \"never-evicted\""), "{msg}");
    assert!(msg.contains("healthy-peer-never-evicted"), "{msg}");
}

#[test]
fn fault_after_the_end() {
    let src = format!("{GOOD}\n[[fault]]\nat = \"31m\"\nkind = \"crash\"\nnode = \"alice\"\n");
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "at = \"31m\""));
    assert!(msg.contains("after the scenario's end"), "{msg}");
}

#[test]
fn huge_numbers() {
    let seed = GOOD.replace("seed = 1", "seed = 99999999999999999999999");
    let (line, _, _, _) = error_of(&seed);
    assert_eq!(line, line_of(&seed, "seed ="));

    let long = GOOD.replace("\"30m\"", "\"999999999999999h\"");
    let (_, _, msg, _) = error_of(&long);
    assert!(msg.contains("too large"), "{msg}");

    let years = GOOD.replace("\"30m\"", "\"100000h\"");
    let (_, _, msg, _) = error_of(&years);
    assert!(msg.contains("longer than"), "{msg}");

    let count = GOOD.replace("ping = true", "ping = true\ncount = 10000000");
    let (line, _, msg, _) = error_of(&count);
    assert_eq!(line, line_of(&count, "count ="));
    assert!(msg.contains("count must be between"), "{msg}");
}

#[test]
fn bad_ratio_and_latency() {
    let drop = GOOD.replace(
        "[[node]]\nname = \"dir\"",
        "[network]\ndrop = \"0.05\"\n\n[[node]]\nname = \"dir\"",
    );
    let (line, _, msg, _) = error_of(&drop);
    assert_eq!(line, line_of(&drop, "drop ="));
    assert!(msg.contains("num/den"), "{msg}");

    let lat = GOOD.replace(
        "[[node]]\nname = \"dir\"",
        "[network]\nlatency = \"150ms..50ms\"\n\n[[node]]\nname = \"dir\"",
    );
    let (_, _, msg, _) = error_of(&lat);
    assert!(msg.contains("low..high"), "{msg}");
}

#[test]
fn zero_timer_is_rejected() {
    let src = format!("{GOOD}\n[config]\npong_wait = \"0s\"\n");
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "pong_wait"));
    assert!(msg.contains("pong_wait must be greater than zero"), "{msg}");
}

#[test]
fn wrong_version_and_profile() {
    let v = GOOD.replace("version = 1", "version = 2");
    assert!(error_of(&v).2.contains("unsupported version 2"));
    let p = GOOD.replace("\"joinmarket-ng\"", "\"joinmarket-py\"");
    let (_, _, msg, _) = error_of(&p);
    assert!(
        msg.contains("joinmarket-rs") && msg.contains("joinmarket-ng-eb812d4c"),
        "{msg}"
    );
}

#[test]
fn cli_exits_2_without_panicking_and_keeps_existing_trace_files() {
    let dir = std::env::temp_dir().join(format!("heartsim-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.toml");
    let src = GOOD.replace("ping = true", "pingg = true");
    std::fs::write(&broken, &src).unwrap();
    let at = format!("broken.toml:{}:1", line_of(&src, "pingg"));
    let out = Command::new(env!("CARGO_BIN_EXE_heartsim"))
        .args(["run"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&at) && !stderr.contains("panicked"),
        "{stderr}"
    );

    // --trace never overwrites a file the user has without --force.
    let good = dir.join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let trace = dir.join("trace.jsonl");
    std::fs::write(&trace, "precious").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_heartsim"))
        .args(["run", "--format", "jsonl", "--trace"])
        .arg(&trace)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "precious");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn madsim_engine_in_a_normal_build_says_how_to_get_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heartsim"))
        .args([
            "run",
            "--engine",
            "madsim",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scenarios/joinmarket/ping-flood-disconnected-rs.toml"
            ),
        ])
        .output()
        .expect("heartsim runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(madsim) {
        return; // this build has the engine
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(r#"RUSTFLAGS="--cfg madsim""#), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing run");
}

#[test]
fn tcp_constants_are_bounded_and_checked() {
    let with_tcp = |body: &str| {
        GOOD.replace(
            "[[node]]\nname = \"dir\"",
            &format!("[tcp]\n{body}\n\n[[node]]\nname = \"dir\""),
        )
    };
    for (body, needle, want) in [
        ("rto_min = \"0s\"", "rto_min = ", "rto_min must be within"),
        ("rto_max = \"2h\"", "rto_max = ", "rto_max must be within"),
        (
            "rto_min = \"2s\"\nrto_max = \"1s\"",
            "rto_max = ",
            "rto_max must be at least rto_min",
        ),
        (
            "retries2 = 1000",
            "retries2 = ",
            "retries2 must be at most 255",
        ),
        ("syn_retries = \"6\"", "syn_retries = ", "invalid type"),
        (
            "syn_linear_timeouts = 256",
            "syn_linear_timeouts = ",
            "syn_linear_timeouts must be at most 255",
        ),
        ("keepalive = true", "keepalive = ", "unknown field"),
    ] {
        let src = with_tcp(body);
        let (line, _, msg, _) = error_of(&src);
        assert_eq!(line, line_of(&src, needle), "{body}: {msg}");
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let s = Scenario::parse(
        ALL,
        Path::new("ok.toml"),
        &with_tcp("retries2 = 8\nrto_min = \"100ms\""),
    )
    .expect("valid");
    assert_eq!(s.tcp.retries2, 8);
    // (2^9 - 1) x 100 ms.
    assert_eq!(s.tcp.data_timeout().as_us(), 51_100_000);
}

/// The message of `source`'s error, which must be on the line with `needle`.
fn message_at(source: &str, needle: &str) -> String {
    let (line, _, msg, _) = error_of(source);
    assert_eq!(line, line_of(source, needle), "{msg}");
    msg
}

#[test]
fn expectations_that_could_never_match_are_errors_with_suggestions() {
    let event = format!("{GOOD}\n[[expect]]\nnever = true\nevent = \"evcit\"\n");
    assert_eq!(
        message_at(&event, "evcit"),
        "event \"evcit\" is not a record kind of joinmarket-directory or the engine, so this \
         [[expect]] could never match; did you mean \"evict\"? (the kinds: docs/trace-format.md)"
    );
    let reason =
        format!("{GOOD}\n[[expect]]\nnever = true\nevent = \"evict\"\nreason = \"pong timeuot\"\n");
    assert_eq!(
        message_at(&reason, "timeuot"),
        "reason \"pong timeuot\" is not one that \"evict\" records give, so this [[expect]] \
         could never match; did you mean \"pong timeout\"? (\"evict\" reasons: \"idle timeout\", \
         \"pong timeout\", \"send failed: connection reset\", \"send failed: broken pipe\", \
         \"send failed: \")"
    );
    let far = reason.replace("pong timeuot", "bored");
    assert!(
        !message_at(&far, "bored").contains("did you mean"),
        "no suggestion when nothing is near"
    );
    let none = format!("{GOOD}\n[[expect]]\nat = \"1m\"\nevent = \"sweep\"\nreason = \"pong\"\n");
    assert_eq!(
        message_at(&none, "reason = \"pong\""),
        "\"sweep\" records have no reason, so this [[expect]] could never match"
    );
    let net = format!("{GOOD}\n[[expect]]\nnever = true\nevent = \"send\"\n");
    assert_eq!(
        message_at(&net, "event = \"send\""),
        "event \"send\" is a network-level record; an [[expect]] reads decision records only \
         (docs/trace-format.md)"
    );
    let node = format!("{GOOD}\n[[expect]]\nnever = true\nevent = \"evict\"\npeer = \"alcie\"\n");
    assert_eq!(
        message_at(&node, "alcie"),
        "unknown node \"alcie\": expected one of the [[node]] names (alice, dir); did you mean \
         \"alice\"?"
    );
    // The part before ": " and a family's head are reasons an expect may name.
    for ok in ["send failed", "send failed: ", "send failed: broken pipe"] {
        let src = reason.replace("pong timeuot", ok);
        Scenario::parse(ALL, Path::new("ok.toml"), &src).expect(ok);
    }
    let family = format!(
        "{GOOD}\n[[expect]]\nnever = true\nevent = \"reject\"\nreason = \"invalid onion address in location-string\"\n"
    );
    Scenario::parse(ALL, Path::new("ok.toml"), &family).expect("a family's head");
}

#[test]
fn node_names_are_printable_bounded_and_not_reserved() {
    let named = |name: &str| GOOD.replace("name = \"alice\"", &format!("name = \"{name}\""));
    let rule = "a node name is 1 to 64 letters, digits, '-', '_' or '.'";
    let net = named("net");
    assert_eq!(
        message_at(&net, "name = \"net\""),
        "node name \"net\" is reserved: the trace names network-wide records \"net\""
    );
    let nul = named("a\\u0000b");
    assert_eq!(
        message_at(&nul, "a\\u0000b"),
        format!("node name \"a\\0b\" has a control character (U+0000) at character 2: {rule}")
    );
    let space = named("al ice");
    assert_eq!(
        message_at(&space, "al ice"),
        format!("node name \"al ice\" has whitespace (U+0020) at character 3: {rule}")
    );
    let tab = named("alice\\t");
    assert_eq!(
        message_at(&tab, "alice\\t"),
        format!("node name \"alice\\t\" has whitespace (U+0009) at character 6: {rule}")
    );
    let arrow = named("a->b");
    assert_eq!(
        message_at(&arrow, "a->b"),
        format!("node name \"a->b\" has '>' at character 3: {rule}")
    );
    let empty = named("");
    assert_eq!(
        message_at(&empty, "name = \"\""),
        format!("a node name cannot be empty: {rule}")
    );
    let long = named(&"x".repeat(65));
    assert_eq!(
        message_at(&long, "xxxx"),
        format!("node name \"xxxxxxxxxxxxxxxx\"... is 65 characters long: {rule}")
    );
    // `count` appends a number: the prefix "net" is fine, a name past the
    // length bound is not.
    let nets = GOOD.replace("name = \"alice\"", "name = \"net\"\ncount = 2");
    Scenario::parse(ALL, Path::new("ok.toml"), &nets).expect("net1 and net2 are names");
    let counted = GOOD.replace(
        "name = \"alice\"",
        &format!("name = \"{}\"\ncount = 10", "y".repeat(63)),
    );
    assert_eq!(
        message_at(&counted, "yyyy"),
        format!("with count = 10: node name \"yyyyyyyyyyyyyyyy\"... is 65 characters long: {rule}")
    );
    // Unicode letters are names.
    let accented = named("zoë");
    Scenario::parse(ALL, Path::new("ok.toml"), &accented).expect("a letter");
}

#[test]
fn partitions_say_what_is_wrong_with_their_groups() {
    let partition = |keys: &str| {
        format!(
            "{GOOD}\n[[node]]\nname = \"bob\"\nkind = \"taker\"\n\n[[fault]]\nat = \"1m\"\nkind = \"partition\"\n{keys}\n"
        )
    };
    let cases = [
        (
            "groups = [[\"dir\", \"alice\"], [\"alice\"]]",
            "\"alice\" is in group 1 and group 2: a node can be in one group only",
        ),
        (
            "groups = [[], [\"alice\", \"alice\"]]",
            "group 1 is empty: every group of a partition names at least one node",
        ),
        (
            "groups = [[\"dir\"], [\"alice\", \"alice\"]]",
            "\"alice\" is listed twice in group 2",
        ),
        (
            "groups = [[\"dir\"]]",
            "a symmetric partition needs at least two groups",
        ),
        (
            "groups = [[\"dir\"], [\"alice\"], [\"bob\"], [], [], [], [], [], [], [], [], [], [], [], [], [], []]",
            "17 groups: a symmetric partition has at most 16 (MAX_GROUPS)",
        ),
        (
            "from = []\nto = [\"dir\"]",
            "from is empty: a one-way partition needs at least one node in from and one in to",
        ),
        (
            "from = \"dir\"\nto = []",
            "to is empty: a one-way partition needs at least one node in from and one in to",
        ),
        (
            "from = [\"dir\", \"dir\"]\nto = \"alice\"",
            "\"dir\" is listed twice in from",
        ),
        (
            "from = [\"dir\", \"bob\"]\nto = [\"alice\", \"bob\"]",
            "\"bob\" is in both from and to: a one-way partition blocks messages from some \
             nodes to others",
        ),
    ];
    for (keys, want) in cases {
        let src = partition(keys);
        // The error points at the value it names.
        let needle = match want
            .split_once(" is empty")
            .or(want.split_once("twice in "))
        {
            Some((_, "from")) | Some(("from", _)) => "from =",
            _ => keys.lines().last().expect("a line"),
        };
        assert_eq!(message_at(&src, needle), want, "{keys}");
    }
    let ok = partition("groups = [[\"dir\"], [\"alice\", \"bob\"]]");
    Scenario::parse(ALL, Path::new("ok.toml"), &ok).expect("a good partition");
}

#[test]
fn input_is_bounded_and_each_bound_is_named() {
    // File size: checked before parsing, at 1:1, without echoing the text.
    let big = format!("{GOOD}\n#{}\n", "x".repeat(1 << 20));
    let (line, col, msg, rendered) = error_of(&big);
    assert_eq!((line, col), (1, 1));
    assert_eq!(
        msg,
        "the file is larger than 1048576 bytes (1 MiB), the most a scenario file may hold \
         (MAX_FILE_BYTES)"
    );
    assert!(rendered.len() < 300, "{rendered}");
    let path = std::env::temp_dir().join(format!("heartsim-big-{}.toml", std::process::id()));
    std::fs::write(&path, &big).expect("written");
    let err = Scenario::load(ALL, &path).expect_err("too large");
    std::fs::remove_file(&path).ok();
    assert_eq!(err.diagnostic().map(|d| d.line), Some(1));

    let tables = |table: &str, n: usize| {
        let mut src = GOOD.to_string();
        for i in 0..n {
            src += &format!("\n[[{table}]]\n");
            src += match table {
                "fault" => "at = \"1m\"\nkind = \"heal\"\n",
                "link" => "from = \"dir\"\nto = \"alice\"\n",
                _ => "never = true\nevent = \"evict\"\n",
            };
            if i + 1 == n {
                src += "# the last\n";
            }
        }
        src
    };
    for (table, max, name, key) in [
        ("fault", 10_000, "MAX_FAULTS", "kind"),
        ("link", 10_000, "MAX_LINKS", "from"),
        ("expect", 10_000, "MAX_EXPECTS", "event"),
    ] {
        let src = tables(table, max + 1);
        let (line, _, msg, _) = error_of(&src);
        assert_eq!(
            msg,
            format!(
                "more than {max} [[{table}]] tables: a scenario may have at most {max} ({name})"
            )
        );
        let last = src.lines().count() - 1;
        assert!(
            src.lines().nth(line - 1).expect("line").starts_with(key) && line + 2 >= last,
            "points at the last table: line {line} of {last}"
        );
    }

    let nodes = GOOD.replace("name = \"alice\"", "name = \"alice\"\ncount = 99999");
    let more = format!("{nodes}\n[[node]]\nname = \"bob\"\nkind = \"taker\"\n");
    assert_eq!(
        message_at(&more, "name = \"bob\""),
        "more than 100000 nodes (count included): a scenario may declare at most 100000 \
         (MAX_NODES)"
    );
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let mut bytes = GOOD.as_bytes().to_vec();
    let at = GOOD.find("silent").expect("there");
    bytes[at] = 0xff;
    let err = Scenario::from_bytes(ALL, Path::new("broken.toml"), &bytes).expect_err("not UTF-8");
    let d = err.diagnostic().expect("a position");
    assert_eq!(
        (d.line, d.column),
        (line_of(GOOD, "silent"), "behaviour = \"".len() + 1)
    );
    assert_eq!(
        d.message,
        format!("the file is not UTF-8: byte 0xff at offset {at} starts no character")
    );
}

/// Found by tests/parser_fuzz.rs: `i64::MIN.abs()` overflowed (a panic in
/// debug builds, and a drift accepted in release builds).
#[test]
fn the_most_negative_drift_is_out_of_range() {
    let src = GOOD.replace(
        "behaviour = \"silent\"",
        "behaviour = \"silent\"\nclock_drift_ppm = -9223372036854775808",
    );
    assert_eq!(
        message_at(&src, "clock_drift_ppm"),
        "clock_drift_ppm must be within ±500000"
    );
    let fault = format!(
        "{GOOD}\n[[fault]]\nat = \"1m\"\nkind = \"clock-drift\"\nnode = \"alice\"\nppm = -9223372036854775808\n"
    );
    assert_eq!(message_at(&fault, "ppm = -9"), "ppm must be within ±500000");
}

#[test]
fn nick_auth_is_checked() {
    let with = |profile: &str, config: &str| {
        GOOD.replace(
            "profile = \"joinmarket-ng\"",
            &format!("profile = \"{profile}\""),
        )
        .replace(
            "[[node]]\nname = \"dir\"",
            &format!("[config]\n{config}\n\n[[node]]\nname = \"dir\""),
        )
    };
    let src = with("joinmarket-rs", "nick_auth = \"prefer_verified\"");
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "nick_auth ="));
    assert!(
        msg.contains("nick_auth needs profile \"joinmarket-ng\""),
        "{msg}"
    );
    let src = with("joinmarket-ng", "nick_auth = \"always\"");
    let (_, _, msg, _) = error_of(&src);
    assert!(
        msg.contains("expected prefer_verified or require_verified"),
        "{msg}"
    );
    let src = with(
        "joinmarket-ng",
        "nick_auth = \"require_verified\"\nnick_auth_timeout = \"31s\"",
    );
    let (line, _, msg, _) = error_of(&src);
    assert_eq!(line, line_of(&src, "nick_auth_timeout"));
    assert!(msg.contains("at most 30s"), "{msg}");
    let src = with("joinmarket-ng", "nick_auth_timeout = \"5s\"");
    let (_, _, msg, _) = error_of(&src);
    assert!(msg.contains("nick_auth_timeout needs nick_auth"), "{msg}");
    let ok = with(
        "joinmarket-ng",
        "nick_auth = \"require_verified\"\nnick_auth_timeout = \"50ms\"",
    );
    Scenario::parse(ALL, Path::new("ok.toml"), &ok).expect("valid");
}

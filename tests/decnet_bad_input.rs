//! decnet scenario keys: bad input is an error at file, line and column
//! that says what was expected, never a panic.

use std::path::Path;

use heartsim::models::ALL;
use heartsim::scenario::Scenario;

const HEAD: &str = r#"version = 1

[scenario]
name = "bad"
model = "decnet"
profile = "decnet-1.0.0"
duration = "1m"

[[host]]
name = "master"

"#;

/// (line, column, message) of the error `nodes` give after the head.
fn error_of(nodes: &str) -> (usize, usize, String) {
    let source = format!("{HEAD}{nodes}");
    let err =
        Scenario::parse(ALL, Path::new("broken.toml"), &source).expect_err("must be rejected");
    let d = err.diagnostic().expect("a diagnostic with a position");
    assert!(
        d.rendered
            .contains(&format!("broken.toml:{}:{}", d.line, d.column)),
        "{}",
        d.rendered
    );
    (d.line, d.column, d.message.clone())
}

const MASTER: &str = "[[node]]\nname = \"m\"\nkind = \"swarmctl\"\nhost = \"master\"\n";

#[test]
fn good_file_parses() {
    let source = format!("{HEAD}{MASTER}[[node]]\nname = \"a1\"\nkind = \"agent\"\n");
    Scenario::parse(ALL, Path::new("ok.toml"), &source).expect("valid");
}

#[test]
fn errors_name_the_place_and_the_expectation() {
    let cases: &[(&str, (usize, &str))] = &[
        ("[[node]]\nname = \"a1\"\nkind = \"agent\"\n", (14, "needs one node of kind \"swarmctl\"")),
        (&format!("{MASTER}[[node]]\nname = \"x\"\nkind = \"wizard\"\n"), (18, "unknown node kind \"wizard\"")),
        (&format!("{MASTER}[[node]]\nname = \"m2\"\nkind = \"swarmctl\"\n"), (18, "only one node may be the swarmctl")),
        (&format!("{MASTER}[[node]]\nname = \"api\"\nkind = \"api\"\n"), (18, "put both on one [[host]]")),
        (&format!("{MASTER}[[node]]\nname = \"a1\"\nkind = \"agent\"\nbody = \"yaml\"\n"), (19, "unknown body \"yaml\": expected upstream, not-json")),
        (&format!("{MASTER}[[node]]\nname = \"a1\"\nkind = \"agent\"\ninterval = \"10s\"\n"), (19, "`interval` is a key of impostor nodes, not of agent nodes")),
        (&format!("{MASTER}[[node]]\nname = \"a1\"\nkind = \"agent\"\ntopology = \"t1\"\n"), (19, "expected \"<topology_id>:<applied_version_hash>\"")),
        (&format!("{MASTER}[[node]]\nname = \"b\"\nkind = \"bus\"\nhost = \"master\"\n[[node]]\nname = \"a1\"\nkind = \"agent\"\nbus = \"b\"\n"), (23, "host-local UNIX socket")),
        (&format!("{MASTER}[[node]]\nname = \"a1\"\nkind = \"agent\"\ncolour = \"red\"\n"), (19, "unknown field `colour`")),
        (&format!("{MASTER}[[node]]\nname = \"api\"\nkind = \"api\"\nhost = \"master\"\nactions = [{{ at = \"1m\", action = \"enrol\", host_uuid = \"x\" }}]\n"), (20, "an enrol needs `certificate`")),
        (&format!("{MASTER}[[node]]\nname = \"api\"\nkind = \"api\"\nhost = \"master\"\nactions = [{{ at = \"1m\", action = \"reboot\", host_uuid = \"x\" }}]\n"), (20, "unknown action \"reboot\"")),
        (&format!("{MASTER}[[node]]\nname = \"api\"\nkind = \"api\"\nhost = \"master\"\npanel_every = \"0s\"\n"), (20, "panel_every must be greater than zero")),
        (&format!("{MASTER}[[node]]\nname = \"api\"\nkind = \"api\"\nhost = \"master\"\nactions = [{{ at = \"1m\", action = \"enrol\", host_uuid = \"a1\", certificate = \"c\" }}]\n[[node]]\nname = \"a1\"\nkind = \"agent\"\n"), (20, "host_uuid \"a1\" already has a row")),
        (&format!("{MASTER}[[node]]\nname = \"api\"\nkind = \"api\"\nhost = \"master\"\nactions = [{{ at = \"1m\", action = \"enrol\", host_uuid = \"n\", certificate = \"c\" }}, {{ at = \"2m\", action = \"enrol\", host_uuid = \"n\", certificate = \"d\" }}]\n"), (20, "host_uuid \"n\" already has a row")),
    ];
    for (nodes, (line, want)) in cases {
        let (l, _, message) = error_of(nodes);
        assert!(message.contains(want), "{message:?} should say {want:?}");
        assert_eq!(l, *line, "{message}");
    }
}

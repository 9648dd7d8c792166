//! `heartsim report`: the page's content, its determinism, and the page in
//! a real browser (headless Chromium from the distro: `.ci/run` installs it
//! when missing and sets `HEARTSIM_REQUIRE_BROWSER=1`, which turns a missing
//! browser from a skip into a failure).

use std::path::{Path, PathBuf};
use std::process::Command;

use heartsim::models::ALL;
use heartsim::report::html;
use heartsim::run::run;
use heartsim::scenario::{model, Scenario};
use heartsim::sim::trace::Level;

const KILLED: &str =
    "scenarios/joinmarket/killed-peer-seen-at-once-crashed-peer-only-by-pong-timeout-ng.toml";

fn page(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    let scenario = Scenario::load(ALL, &path).expect("valid scenario");
    let m = model::find(ALL, scenario.model).expect("registered");
    let outcome = run(&scenario, None, Level::Decision).expect("within limits");
    html(m, &scenario, &outcome.trace).expect("a page")
}

#[test]
fn the_page_has_a_lane_per_node_every_decision_and_the_qos_table() {
    let p = page(KILLED);
    for node in ["dir", "alice", "bob"] {
        assert!(
            p.contains(&format!(r#"<g class="lane" data-node="{node}">"#)),
            "{node}"
        );
    }
    // bob's eviction, on the directory's lane and on his, with its trace line.
    let evict = "0:11:30.000  dir      evict        bob      pong timeout";
    assert_eq!(p.matches(evict).count(), 2, "on both lanes");
    assert_eq!(p.matches(r#"class="marker about k-evict""#).count(), 1);
    // Faults: the starts of the three nodes, alice's kill, bob's crash.
    assert_eq!(p.matches(r#"<line class="fault""#).count(), 5);
    // Truth: alice and bob up, then down at 5:00.
    assert_eq!(p.matches(r#"<rect class="truth down""#).count(), 2);
    // The QoS table: one row per (monitor, node) pair and one for all.
    let table = &p[p.find(r#"<table id="qos">"#).expect("a table")..];
    assert_eq!(table.matches("<tr>").count(), 1 + 2 + 1);
    assert!(table.contains("<td>0:06:30.000</td>"), "bob's T_D");
    assert!(
        !p.contains("src=\"http") && !p.contains("href=\"http"),
        "no network"
    );
}

#[test]
fn the_same_run_gives_the_same_page() {
    assert_eq!(page(KILLED), page(KILLED));
}

#[test]
fn every_model_draws_its_scenarios() {
    for rel in [
        "scenarios/kstlib/killed-writer-declared-dead-at-the-exact-poll-threaded.toml",
        "scenarios/nfd-s/worked-example-mistakes-detections-and-a-missed-crash.toml",
    ] {
        let p = page(rel);
        assert!(p.contains(r#"class="verdict suspect""#), "{rel}");
        assert!(p.contains(r#"class="verdict trust""#), "{rel}");
    }
}

fn heartsim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_heartsim"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("heartsim runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

#[test]
fn the_cli_writes_the_page_and_never_overwrites_without_force() {
    let out = scratch("cli.html");
    let _ = std::fs::remove_file(&out);
    let o = out.to_str().expect("utf-8 path");
    assert_eq!(
        heartsim(&["report", KILLED, "-o", o]).status.code(),
        Some(0)
    );
    assert_eq!(
        std::fs::read_to_string(&out).expect("written"),
        page(KILLED)
    );
    let again = heartsim(&["report", KILLED, "-o", o]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        heartsim(&["report", KILLED, "-o", o, "--force"])
            .status
            .code(),
        Some(0)
    );
}

fn browser() -> Option<String> {
    if let Ok(b) = std::env::var("HEARTSIM_CHROMIUM") {
        return Some(b);
    }
    ["chromium-headless-shell", "chromium", "chromium-browser"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
}

/// The page in headless Chromium: the script ran without an error (it sets
/// `data-ready` last and `data-error` on any error), drew the time axis, and
/// the lanes, markers and table are in the rendered DOM; the screenshot is
/// a real image.
#[test]
fn the_page_renders_in_a_real_browser_without_script_errors() {
    let Some(chromium) = browser() else {
        assert!(
            std::env::var_os("HEARTSIM_REQUIRE_BROWSER").is_none(),
            "no headless Chromium: apt-get install chromium-headless-shell"
        );
        eprintln!("skipped: no headless Chromium (apt-get install chromium-headless-shell)");
        return;
    };
    let html_path = scratch("browser.html");
    std::fs::write(&html_path, page(KILLED)).expect("page written");
    let url = format!("file://{}", html_path.display());
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,600",
    ];
    let dom = Command::new(&chromium)
        .args(flags)
        .args(["--virtual-time-budget=2000", "--dump-dom", &url])
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the script finished:\n{dom}"
    );
    assert!(!dom.contains("data-error="), "a script error:\n{dom}");
    assert_eq!(dom.matches(r#"class="lane""#).count(), 3);
    assert!(dom.contains(r#"<span style="left:"#), "the axis was drawn");
    assert!(dom.contains(r#"<table id="qos">"#));
    let png = scratch("browser.png");
    let _ = std::fs::remove_file(&png);
    let shot = Command::new(&chromium)
        .args(flags)
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000, "an image with something in it");
}

/// `heartsim report --sweep DIR`: every cell a point with its intervals,
/// the cells on the base scenario's own `idle_threshold` (600 s, upstream's
/// default) marked, and the page renders without a script error.
#[test]
fn a_sweep_draws_its_trade_off_with_the_defaults_marked() {
    let dir = scratch("sweep-out");
    let d = dir.to_str().expect("utf-8 path");
    let run = heartsim(&[
        "sweep",
        "sweeps/joinmarket-idle-threshold-by-drop.toml",
        "--seeds",
        "1..5",
        "--out",
        d,
        "--force",
        "--quiet",
    ]);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page_path = scratch("sweep.html");
    let p = page_path.to_str().expect("utf-8 path");
    let made = heartsim(&["report", "--sweep", d, "-o", p, "--force"]);
    assert_eq!(
        made.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let page = std::fs::read_to_string(&page_path).expect("written");
    assert_eq!(page.matches(r#"<g class="cell"#).count(), 9);
    assert_eq!(
        page.matches(r#"<g class="cell default""#).count(),
        3,
        "600 s x 3 drops"
    );
    assert!(page.contains("config.idle_threshold=600s network.drop=0/100: T_D 240.000 s"));
    assert_eq!(page.matches("<tr").count(), 1 + 9);
    if let Some(chromium) = browser() {
        let dom = Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
            .arg(format!("file://{}", page_path.display()))
            .output()
            .expect("chromium runs");
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert!(
            dom.contains(r#"data-ready="1""#) && !dom.contains("data-error="),
            "{dom}"
        );
        assert!(dom.contains(r#"<svg id="tradeoff""#));
    }
}

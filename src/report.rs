//! `heartsim report`: one self-contained HTML page for one run (inline SVG
//! and a little script; no network, no CDN), readable offline and as a CI
//! artifact.
//!
//! Per node, a lane: its truth (up, down, paused; cut off from a monitor
//! that judges it), the verdicts about it (trusted, suspected, per monitor),
//! its decision records and the faults that hit it, each with its trace line
//! on hover. The time axis zooms (wheel) and pans (drag). Below: the QoS
//! table (`docs/qos.md`). The page is a pure function of the scenario and
//! its trace: the same run gives the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write;

use heartsim_sim::trace::{Record, Trace};
use heartsim_sim::{NodeId, Timestamp};

use crate::qos::{self, Life, QosError, Report, Truth};
use crate::scenario::{Model, Says, Scenario};

/// Most lanes a page draws.
pub const MAX_LANES: usize = 200;
/// Most markers (decision records) a page draws.
pub const MAX_MARKERS: usize = 50_000;

/// Why a page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Truth(#[from] QosError),
    #[error("{what}: {count} is more than a report draws ({limit}); report a smaller or shorter scenario")]
    TooBig {
        what: &'static str,
        count: usize,
        limit: usize,
    },
}

const LANE_H: f64 = 40.0;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds, as SVG coordinates.
fn x(t: Timestamp) -> String {
    let us = t.as_us();
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

fn life_class(l: Life) -> &'static str {
    match l {
        Life::Up => "up",
        Life::Down => "down",
        Life::Paused => "paused",
    }
}

/// The page for `trace`, a run of `scenario` under `model`.
pub fn html(model: &dyn Model, scenario: &Scenario, trace: &Trace) -> Result<String, ReportError> {
    let truth = Truth::of(scenario, trace)?;
    let qos = qos::measure(&truth, model.verdicts(), trace);
    let nodes = scenario.nodes.len();
    if nodes > MAX_LANES {
        return Err(ReportError::TooBig {
            what: "nodes",
            count: nodes,
            limit: MAX_LANES,
        });
    }
    let decisions: Vec<&Record> = trace.decisions().collect();
    if decisions.len() > MAX_MARKERS {
        return Err(ReportError::TooBig {
            what: "decision records",
            count: decisions.len(),
            limit: MAX_MARKERS,
        });
    }
    let end = truth.end.max(Timestamp::from_us(1));
    let mut svg = String::new();
    let height = LANE_H * nodes as f64;
    let _ = write!(
        svg,
        r#"<svg id="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {height}" preserveAspectRatio="none" width="100%" height="{height}" data-end="{}">"#,
        x(end),
        x(end)
    );

    // The pairs the verdicts are about, by monitored node.
    let says = |k: &str| {
        model
            .verdicts()
            .iter()
            .find(|v| v.kind == k)
            .map(|v| v.says)
    };
    let mut verdicts: BTreeMap<(NodeId, NodeId), Vec<(Timestamp, Says)>> = BTreeMap::new();
    for r in &decisions {
        if let (Some(m), Some(n), Some(s)) = (r.node, r.peer, says(r.kind)) {
            verdicts.entry((n, m)).or_default().push((r.t, s));
        }
    }

    for lane in 0..nodes {
        let n = NodeId(lane);
        let y = LANE_H * lane as f64;
        let _ = write!(
            svg,
            r#"<g class="lane" data-node="{}"><rect class="lane-bg" x="0" y="{y}" width="{}" height="{LANE_H}"/>"#,
            esc(trace.name(n)),
            x(end)
        );
        for (span, life) in &truth.life[lane] {
            let _ = write!(
                svg,
                r#"<rect class="truth {}" x="{}" y="{}" width="{}" height="10"><title>{}: {} from {} to {}</title></rect>"#,
                life_class(*life),
                x(span.from),
                y + 2.0,
                x(Timestamp::ZERO + span.len()),
                esc(trace.name(n)),
                life_class(*life),
                span.from,
                span.to
            );
        }
        // Cut off from a monitor that judges it, and that monitor's verdicts.
        let monitors: Vec<(NodeId, &Vec<(Timestamp, Says)>)> = verdicts
            .range((n, NodeId(0))..=(n, NodeId(usize::MAX)))
            .map(|((_, m), v)| (*m, v))
            .collect();
        for (i, (m, says)) in monitors.iter().enumerate() {
            let band = 3.0 / monitors.len() as f64;
            for span in truth.cut_off(*m, n) {
                let _ = write!(
                    svg,
                    r#"<rect class="truth cut" x="{}" y="{}" width="{}" height="10"><title>{} cut off from {} from {} to {}</title></rect>"#,
                    x(span.from),
                    y + 2.0,
                    x(Timestamp::ZERO + span.len()),
                    esc(trace.name(n)),
                    esc(trace.name(*m)),
                    span.from,
                    span.to
                );
            }
            for (j, (t, s)) in says.iter().enumerate() {
                let to = says.get(j + 1).map_or(end, |(next, _)| *next);
                let class = if *s == Says::Trust {
                    "trust"
                } else {
                    "suspect"
                };
                let _ = write!(
                    svg,
                    r#"<rect class="verdict {class}" x="{}" y="{}" width="{}" height="{band}"><title>{} {class}s {} from {t}</title></rect>"#,
                    x(*t),
                    y + 14.0 + band * i as f64,
                    x(Timestamp::ZERO + to.saturating_since(*t)),
                    esc(trace.name(*m)),
                    esc(trace.name(n)),
                );
            }
        }
        svg.push_str("</g>");
    }
    let mut markers = 0usize;
    let mut faults = 0usize;
    for r in &decisions {
        let line = esc(trace.text_line(r).trim());
        let fault = qos::is_fault_kind(r.kind);
        match (r.node, fault) {
            // A network-wide fault: a line across every lane.
            (None, _) => {
                faults += 1;
                let _ = write!(
                    svg,
                    r#"<line class="fault net" x1="{0}" x2="{0}" y1="0" y2="{height}"><title>{line}</title></line>"#,
                    x(r.t)
                );
            }
            (Some(n), true) => {
                faults += 1;
                let y = LANE_H * n.0 as f64;
                let _ = write!(
                    svg,
                    r#"<line class="fault" x1="{0}" x2="{0}" y1="{y}" y2="{1}"><title>{line}</title></line>"#,
                    x(r.t),
                    y + LANE_H
                );
            }
            // On the lane of the node that decided, and of the peer it is
            // about (an eviction shows on the evicted peer's lane too).
            (Some(n), false) => {
                markers += 1;
                for (lane, class) in [
                    (Some(n), "marker"),
                    (r.peer.filter(|p| *p != n), "marker about"),
                ] {
                    let Some(lane) = lane else { continue };
                    let y = LANE_H * lane.0 as f64 + 22.0;
                    let _ = write!(
                        svg,
                        r#"<line class="{class} k-{kind}" x1="{at}" x2="{at}" y1="{y}" y2="{y2}"><title>{line}</title></line>"#,
                        kind = esc(r.kind),
                        at = x(r.t),
                        y2 = y + 14.0,
                    );
                }
            }
        }
    }
    svg.push_str("</svg>");

    let labels: String = (0..nodes)
        .map(|i| {
            format!(
                r#"<div class="label" style="height:{LANE_H}px">{}</div>"#,
                esc(trace.name(NodeId(i)))
            )
        })
        .collect();

    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>heartsim report: {name}</title>
<style>{STYLE}</style></head>
<body data-ready="0">
<h1>{name}</h1>
<p class="meta">model <b>{model}</b>, profile <b>{profile}</b>, seed <b>{seed}</b>, {end} simulated; {markers} decision markers, {faults} faults. Wheel to zoom, drag to pan, double-click to reset; hover a mark for its trace line.</p>
<div class="legend"><span class="sw up"></span>up <span class="sw down"></span>down <span class="sw paused"></span>paused <span class="sw cut"></span>cut off from its monitor <span class="sw trust"></span>trusted <span class="sw suspect"></span>suspected <span class="sw marker"></span>decision <span class="sw fault"></span>fault</div>
<div id="timeline"><div id="labels">{labels}</div><div id="plotbox"><div id="axis"></div>{svg}</div></div>
<h2>Quality of service</h2>
{table}
<script>{SCRIPT}</script>
</body></html>
"#,
        name = esc(&scenario.name),
        model = esc(scenario.model),
        profile = esc(scenario.profile),
        seed = scenario.seed,
        end = truth.end,
        table = qos_table(&qos, trace),
    );
    Ok(page)
}

fn qos_table(report: &Report, trace: &Trace) -> String {
    let d = |s: &qos::Sample| s.mean().map_or_else(|| "-".to_string(), |d| d.to_string());
    let f = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| format!("{x:.6}"));
    let row = |monitor: &str, node: &str, q: &qos::Qos| {
        format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(monitor),
            esc(node),
            d(&q.detection),
            q.missed,
            q.mistakes,
            d(&q.recurrence),
            d(&q.mistake_duration),
            d(&q.good_period),
            f(q.query_accuracy()),
            f(q.mistake_rate_per_hour()),
            f(q.evictions_per_hour()),
        )
    };
    let mut rows: String = report
        .pairs
        .iter()
        .map(|p| row(trace.name(p.monitor), trace.name(p.node), &p.qos))
        .collect();
    rows.push_str(&row("all", "", &report.all));
    format!(
        r#"<table id="qos"><thead><tr><th>monitor</th><th>node</th><th>T_D mean</th><th>missed</th><th>mistakes</th><th>T_MR</th><th>T_M</th><th>T_G</th><th>P_A</th><th>mistakes/h</th><th>evictions/h</th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}.meta{color:#555}
.legend{margin:.5em 0 1em}.sw{display:inline-block;width:1.2em;height:.8em;margin:0 .3em 0 1em;vertical-align:middle}
#timeline{display:flex;border:1px solid #ccc}
#labels{flex:0 0 8em;padding-top:1.6em;border-right:1px solid #ccc}
.label{box-sizing:border-box;padding:.2em .4em;font-family:monospace;border-bottom:1px solid #eee;overflow:hidden}
#plotbox{flex:1;position:relative;overflow:hidden;cursor:grab}
#axis{height:1.6em;position:relative;font:11px monospace;color:#444;border-bottom:1px solid #ccc}
#axis span{position:absolute;top:.3em;transform:translateX(-50%);white-space:nowrap}
.lane-bg{fill:#fff}.lane:nth-child(even) .lane-bg{fill:#f7f7f7}
.truth.up,.sw.up{fill:#7cc47c;background:#7cc47c}.truth.down,.sw.down{fill:#bbb;background:#bbb}
.truth.paused,.sw.paused{fill:#f0b04a;background:#f0b04a}.truth.cut,.sw.cut{fill:#9b6fd1;opacity:.75;background:#9b6fd1}
.verdict.trust,.sw.trust{fill:#4a7fd0;background:#4a7fd0}.verdict.suspect,.sw.suspect{fill:#d9453b;background:#d9453b}
.marker,.fault{vector-effect:non-scaling-stroke;stroke-width:2}
.marker{stroke:#333}.marker.about{stroke-dasharray:2 2}.sw.marker{background:#333}.marker.k-evict,.marker.k-dead,.marker.k-fired,.marker.k-suspect{stroke:#d9453b}
.fault{stroke:#e07b00;stroke-dasharray:3 2}.sw.fault{background:#e07b00}
#qos{border-collapse:collapse;font-family:monospace}#qos td,#qos th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
"#;

const SCRIPT: &str = r#"
window.addEventListener('error', function (e) { document.body.dataset.error = String(e.message); });
(function () {
  var svg = document.getElementById('plot');
  var axis = document.getElementById('axis');
  var end = parseFloat(svg.dataset.end);
  var h = svg.viewBox.baseVal.height;
  var view = [0, end];
  function fmt(s) {
    var ms = Math.round(s * 1000), h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60;
    var sec = Math.floor(ms / 1000) % 60, r = ms % 1000;
    return h + ':' + (m < 10 ? '0' : '') + m + ':' + (sec < 10 ? '0' : '') + sec + (r ? '.' + String(r).padStart(3, '0') : '');
  }
  function draw() {
    svg.setAttribute('viewBox', view[0] + ' 0 ' + (view[1] - view[0]) + ' ' + h);
    var span = view[1] - view[0], raw = span / 10, p = Math.pow(10, Math.floor(Math.log10(raw))), step = p;
    [1, 2, 5, 10].some(function (k) { if (k * p >= raw) { step = k * p; return true; } return false; });
    var html = '';
    for (var t = Math.ceil(view[0] / step) * step; t <= view[1]; t += step) {
      html += '<span style="left:' + ((t - view[0]) / span * 100) + '%">' + fmt(t) + '</span>';
    }
    axis.innerHTML = html;
  }
  var box = document.getElementById('plotbox');
  box.addEventListener('wheel', function (e) {
    e.preventDefault();
    var r = svg.getBoundingClientRect(), f = (e.clientX - r.left) / r.width;
    var at = view[0] + f * (view[1] - view[0]);
    var k = e.deltaY < 0 ? 0.8 : 1.25, span = Math.min(end, Math.max(1e-3, (view[1] - view[0]) * k));
    var from = Math.max(0, Math.min(end - span, at - f * span));
    view = [from, from + span];
    draw();
  }, { passive: false });
  var drag = null;
  box.addEventListener('mousedown', function (e) { drag = [e.clientX, view[0], view[1]]; });
  window.addEventListener('mouseup', function () { drag = null; });
  window.addEventListener('mousemove', function (e) {
    if (!drag) return;
    var r = svg.getBoundingClientRect(), span = drag[2] - drag[1];
    var from = Math.max(0, Math.min(end - span, drag[1] - (e.clientX - drag[0]) / r.width * span));
    view = [from, from + span];
    draw();
  });
  box.addEventListener('dblclick', function () { view = [0, end]; draw(); });
  draw();
  document.body.dataset.ready = '1';
})();
"#;

/// The page of a sweep (`heartsim sweep`'s output directory): each cell's
/// mean detection time against its mistake rate, the trade-off users tune,
/// with 95% intervals, the cells that keep the base scenario's own setting
/// on every `config.*` axis marked (the upstream defaults, when the base
/// scenario uses them, as `sweeps/` does), and a table of the cells.
pub fn sweep_html(dir: &std::path::Path) -> Result<String, String> {
    use serde_json::Value;
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let manifest: Value =
        serde_json::from_str(&read("sweep.json")?).map_err(|e| format!("sweep.json: {e}"))?;
    let cells: Vec<Value> = read("aggregate.jsonl")?
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("aggregate.jsonl: {e}")))
        .collect::<Result<_, _>>()?;
    if cells.len() > MAX_LANES * 50 {
        return Err(format!("{} cells is more than a page draws", cells.len()));
    }
    // The base scenario's own values for the `config.*` axes.
    let scenario_path = manifest["scenario"].as_str().unwrap_or_default();
    let base: Option<toml::Table> = std::fs::read_to_string(scenario_path)
        .ok()
        .and_then(|t| t.parse().ok());
    let own = |path: &str| -> Option<String> {
        let key = path.strip_prefix("config.")?;
        let v = base.as_ref()?.get("config")?.get(key)?;
        Some(v.as_str().map_or_else(|| v.to_string(), str::to_string))
    };
    let is_default = |cell: &Value| -> bool {
        let Some(set) = cell["set"].as_object() else {
            return false;
        };
        let config: Vec<_> = set
            .iter()
            .filter(|(p, _)| p.starts_with("config."))
            .collect();
        !config.is_empty() && config.iter().all(|(p, v)| own(p).as_deref() == v.as_str())
    };
    let num = |v: &Value| v.as_f64();
    struct Point {
        label: String,
        x: f64,
        x_lo: f64,
        x_hi: f64,
        y: f64,
        y_lo: f64,
        y_hi: f64,
        default: bool,
    }
    let points: Vec<Point> = cells
        .iter()
        .filter_map(|c| {
            let d = &c["detection_seed_mean_s"];
            let m = &c["mistake_rate_per_hour_seed_mean"];
            let label = c["set"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            Some(Point {
                label,
                x: num(&d["mean"])?,
                x_lo: num(&d["lo"])?,
                x_hi: num(&d["hi"])?,
                y: num(&m["mean"])?,
                y_lo: num(&m["lo"])?,
                y_hi: num(&m["hi"])?,
                default: is_default(c),
            })
        })
        .collect();
    let (w, h, ml, mb, mt, mr) = (800.0, 440.0, 76.0, 50.0, 20.0, 130.0);
    let max = |f: &dyn Fn(&Point) -> f64| points.iter().map(f).fold(0.0_f64, f64::max);
    let x_max = (max(&|p| p.x_hi) * 1.1).max(1.0);
    let y_max = (max(&|p| p.y_hi) * 1.1).max(0.001);
    let px = |x: f64| ml + x / x_max * (w - ml - mr);
    let py = |y: f64| h - mb - y / y_max * (h - mb - mt);
    let mut svg = format!(
        r#"<svg id="tradeoff" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}">"#
    );
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{ml}" y1="{0}" x2="{1}" y2="{0}"/><line class="axis" x1="{ml}" y1="{mt}" x2="{ml}" y2="{0}"/>"#,
        h - mb,
        w - mr
    );
    for i in 0..=5 {
        let (xv, yv) = (x_max * f64::from(i) / 5.0, y_max * f64::from(i) / 5.0);
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{xv:.0}</text><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{yv:.4}</text>"#,
            px(xv),
            h - mb + 16.0,
            ml - 6.0,
            py(yv) + 4.0
        );
    }
    let _ = write!(
        svg,
        r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">mean detection time T_D (s)</text><text class="label" transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">mistakes per hour</text>"#,
        (ml + w - mr) / 2.0,
        h - 10.0,
        (mt + h - mb) / 2.0
    );
    for p in &points {
        let class = if p.default { "cell default" } else { "cell" };
        let title = esc(&format!(
            "{}: T_D {:.3} s [{:.3}, {:.3}], mistakes/h {:.4} [{:.4}, {:.4}]{}",
            p.label,
            p.x,
            p.x_lo,
            p.x_hi,
            p.y,
            p.y_lo,
            p.y_hi,
            if p.default {
                " (upstream defaults)"
            } else {
                ""
            }
        ));
        let _ = write!(
            svg,
            r#"<g class="{class}"><title>{title}</title><line class="ci" x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/><line class="ci" x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/><circle cx="{:.1}" cy="{:.1}" r="{}"/></g>"#,
            px(p.x_lo),
            px(p.x_hi),
            py(p.y),
            py(p.y),
            px(p.x),
            px(p.x),
            py(p.y_lo),
            py(p.y_hi),
            px(p.x),
            py(p.y),
            if p.default { 7 } else { 4 }
        );
        if p.default {
            let _ = write!(
                svg,
                r#"<text class="mark" x="{:.1}" y="{:.1}">upstream defaults</text>"#,
                px(p.x) + 9.0,
                py(p.y) - 9.0
            );
        }
    }
    svg.push_str("</svg>");
    let rows: String = points
        .iter()
        .map(|p| {
            format!(
                r#"<tr{}><td style="text-align:left">{}</td><td>{:.3}</td><td>[{:.3}, {:.3}]</td><td>{:.4}</td><td>[{:.4}, {:.4}]</td></tr>"#,
                if p.default { r#" class="default""# } else { "" },
                esc(&p.label),
                p.x,
                p.x_lo,
                p.x_hi,
                p.y,
                p.y_lo,
                p.y_hi
            )
        })
        .collect();
    let runs = manifest["runs"].as_u64().unwrap_or_default();
    Ok(format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>heartsim sweep: {scenario}</title>
<style>{STYLE}{SWEEP_STYLE}</style></head>
<body data-ready="0">
<h1>Sweep of {scenario}</h1>
<p class="meta">{cells} cells, {runs} runs. Each point is a cell: the mean over its seeds of the detection time and of the mistake rate, with 95% intervals; the larger point keeps the base scenario's own setting on every config axis. Hover a point for its values.</p>
{svg}
<table id="cells"><thead><tr><th>cell</th><th>T_D mean s</th><th>95% CI</th><th>mistakes/h</th><th>95% CI</th></tr></thead><tbody>{rows}</tbody></table>
<script>window.addEventListener('error', function (e) {{ document.body.dataset.error = String(e.message); }}); document.body.dataset.ready = '1';</script>
</body></html>
"#,
        scenario = esc(scenario_path),
        cells = points.len(),
    ))
}

const SWEEP_STYLE: &str = r#"
#tradeoff .axis{stroke:#444}#tradeoff .tick{font:11px monospace;fill:#444}#tradeoff .label{font:13px sans-serif;fill:#222}
#tradeoff .cell circle{fill:#4a7fd0}#tradeoff .cell .ci{stroke:#4a7fd0;stroke-width:1.5}
#tradeoff .default circle{fill:#d9453b}#tradeoff .default .ci{stroke:#d9453b}#tradeoff .mark{font:12px sans-serif;fill:#d9453b}
#cells{border-collapse:collapse;font-family:monospace;margin-top:1em}#cells td,#cells th{border:1px solid #ccc;padding:.2em .5em;text-align:right}#cells tr.default{color:#d9453b}
"#;

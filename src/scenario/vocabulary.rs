//! What a scenario's trace can hold: the engine's record kinds
//! ([`ENGINE_KINDS`]) and its model's ([`Model::records`]), each with every
//! reason it gives. An `[[expect]]` naming a kind or reason outside them
//! could never match, so it is an error, with the nearest name as a
//! suggestion; `tests/declarations.rs` fails on any record a run writes
//! that is not declared, and keeps the lists in `docs/trace-format.md`
//! current ([`markdown`]).

use heartsim_sim::trace::{Level, Reason, Record, RecordKind, Trace, ENGINE_KINDS};

use super::Model;

/// Every kind `model`'s runs can write: the engine's, then the model's.
pub fn kinds(model: &dyn Model) -> impl Iterator<Item = &'static RecordKind> {
    ENGINE_KINDS.iter().chain(model.records())
}

fn find(model: &dyn Model, kind: &str) -> Option<&'static RecordKind> {
    kinds(model).find(|k| k.kind == kind)
}

/// Texts a reason stands for: itself, or the model's deadline reasons.
fn texts(reason: &Reason, model: &dyn Model) -> Vec<&'static str> {
    match reason {
        Reason::Is(s) | Reason::Family(s, _) => vec![s],
        Reason::Deadline => model.deadlines().to_vec(),
    }
}

/// Whether `got`, a record's reason, is one `reason` declares.
fn admits(reason: &Reason, model: &dyn Model, got: &str) -> bool {
    match reason {
        Reason::Family(prefix, _) => got.starts_with(prefix),
        _ => texts(reason, model).contains(&got),
    }
}

/// Whether an `[[expect]]`'s `reason = want` can match a record whose
/// reason `reason` declares: equal, or the part before `": "` (as
/// [`crate::run::check`] matches).
fn can_match(reason: &Reason, model: &dyn Model, want: &str) -> bool {
    let before_colon = |s: &str| s.strip_prefix(want).is_some_and(|r| r.starts_with(':'));
    match reason {
        Reason::Family(prefix, _) => want.starts_with(prefix) || before_colon(prefix),
        _ => texts(reason, model)
            .into_iter()
            .any(|s| s == want || before_colon(s)),
    }
}

/// Why `record` is not among `model`'s and the engine's declarations, if
/// it is not.
pub fn undeclared(model: &dyn Model, trace: &Trace, record: &Record) -> Option<String> {
    let line = || trace.text_line(record).trim_start().to_string();
    let Some(k) = find(model, record.kind) else {
        return Some(format!("undeclared kind {:?}: {}", record.kind, line()));
    };
    if k.level != record.level {
        return Some(format!(
            "{:?} is declared at level {:?}, written at {:?}: {}",
            k.kind,
            k.level,
            record.level,
            line()
        ));
    }
    match (&record.reason, k.reasons) {
        (None, []) => None,
        (None, _) => Some(format!(
            "{:?} declares reasons, wrote none: {}",
            k.kind,
            line()
        )),
        (Some(r), reasons) if reasons.iter().any(|d| admits(d, model, r)) => None,
        (Some(r), _) => Some(format!(
            "{:?} does not declare the reason {r:?}: {}",
            k.kind,
            line()
        )),
    }
}

/// Check an `[[expect]]`'s `event` and `reason`: `Err` says why it could
/// never match.
pub fn check_event(model: &dyn Model, event: &str) -> Result<&'static RecordKind, String> {
    let Some(k) = find(model, event) else {
        let names: Vec<&str> = kinds(model)
            .filter(|k| k.level == Level::Decision)
            .map(|k| k.kind)
            .collect();
        return Err(format!(
            "event {event:?} is not a record kind of {} or the engine, so this [[expect]] \
             could never match{} (the kinds: docs/trace-format.md)",
            model.name(),
            did_you_mean(event, names)
        ));
    };
    if k.level == Level::Net {
        return Err(format!(
            "event {event:?} is a network-level record; an [[expect]] reads decision \
             records only (docs/trace-format.md)"
        ));
    }
    Ok(k)
}

/// Check an `[[expect]]`'s `reason` for records of kind `k`.
pub fn check_reason(model: &dyn Model, k: &RecordKind, want: &str) -> Result<(), String> {
    if k.reasons.is_empty() {
        return Err(format!(
            "{:?} records have no reason, so this [[expect]] could never match",
            k.kind
        ));
    }
    if k.reasons.iter().any(|r| can_match(r, model, want)) {
        return Ok(());
    }
    let candidates: Vec<&str> = k
        .reasons
        .iter()
        .flat_map(|r| texts(r, model))
        .map(|s| s.trim_end_matches([' ', ':', '(', '#']))
        .collect();
    let listed: Vec<String> = k
        .reasons
        .iter()
        .map(|r| describe(r, model.deadlines()))
        .collect();
    Err(format!(
        "reason {want:?} is not one that {:?} records give, so this [[expect]] could never \
         match{} ({:?} reasons: {})",
        k.kind,
        did_you_mean(want, candidates),
        k.kind,
        listed.join(", ")
    ))
}

/// `; did you mean "x"?` for the candidate nearest `word` (edit distance
/// with transpositions, case-insensitive), if one is near enough.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match suggest(word, candidates) {
        Some(s) => format!("; did you mean {s:?}?"),
        None => String::new(),
    }
}

fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let near = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= near)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A reason as the docs print it.
fn describe(reason: &Reason, deadlines: &[&str]) -> String {
    match reason {
        Reason::Is(s) => format!("{s:?}"),
        Reason::Family(prefix, rest) => format!("\"{prefix}{rest}\""),
        Reason::Deadline if deadlines.is_empty() => "the machine's deadline reason".to_string(),
        Reason::Deadline => {
            let names: Vec<String> = deadlines.iter().map(|d| format!("{d:?}")).collect();
            format!("a deadline ({})", names.join(", "))
        }
    }
}

/// The table of `kinds` for `docs/trace-format.md`.
fn table(kinds: &[RecordKind], deadlines: &[&str]) -> String {
    let mut out = String::from("| kind | level | reasons | what |\n|---|---|---|---|\n");
    for k in kinds {
        let reasons: Vec<String> = k
            .reasons
            .iter()
            .map(|r| describe(r, deadlines).replace('"', "`"))
            .collect();
        let level = match k.level {
            Level::Decision => "decision",
            Level::Net => "net",
        };
        out += &format!(
            "| `{}` | {level} | {} | {} |\n",
            k.kind,
            if reasons.is_empty() {
                "none".to_string()
            } else {
                reasons.join(", ")
            },
            k.about
        );
    }
    out
}

/// The record kinds of the engine and of every model in `models`, as
/// `docs/trace-format.md` lists them between its `kinds` markers.
pub fn markdown(models: &[&'static dyn Model]) -> String {
    let mut out = String::from("Written by the engine:\n\n");
    out += &table(ENGINE_KINDS, &[]);
    for m in models {
        out += &format!(
            "\nWritten by `{}` (deadline reasons: {}):\n\n",
            m.name(),
            m.deadlines()
                .iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out += &table(m.records(), m.deadlines());
    }
    out
}

//! The JSON Schema of each model's scenario files, checked in under
//! `docs/schema/`, is the one generated from the types the parser reads: a
//! key added to a section type and not to the file fails here.
//! `HEARTSIM_WRITE_SCHEMA=1 cargo test --test schema` rewrites the files.

use std::path::Path;

use heartsim::models::ALL;
use heartsim::scenario::schema::{path, schema, text};

#[test]
fn checked_in_schemas_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = std::env::var_os("HEARTSIM_WRITE_SCHEMA").is_some();
    let mut stale = Vec::new();
    for model in ALL {
        let file = root.join(path(*model));
        let want = text(*model);
        if write {
            std::fs::create_dir_all(file.parent().expect("docs/schema")).expect("mkdir");
            std::fs::write(&file, &want).expect("written");
        } else if std::fs::read_to_string(&file).ok().as_deref() != Some(want.as_str()) {
            stale.push(path(*model));
        }
    }
    assert!(
        stale.is_empty(),
        "{} out of date with the section types: run HEARTSIM_WRITE_SCHEMA=1 cargo test --test schema, and review the diff",
        stale.join(", ")
    );
}

/// Every key of every scenario file is a key the schema knows, in the
/// section the schema puts it: the schema describes the files as written.
#[test]
fn every_scenario_file_uses_only_keys_the_schema_knows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for model in ALL {
        let schema = schema(*model);
        let dir = root.join("scenarios");
        for entry in walk(&dir) {
            let text = std::fs::read_to_string(&entry).expect("readable");
            let doc: toml::Table = toml::from_str(&text).expect("TOML");
            let named = doc["scenario"]["model"].as_str() == Some(model.name());
            if named {
                known_keys(
                    &schema,
                    &schema,
                    &toml::Value::Table(doc),
                    &entry.display().to_string(),
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} files checked");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("scenarios/") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Follow `$ref`s into the root's definitions.
fn resolve<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
    match s["$ref"].as_str() {
        Some(r) => resolve(
            root,
            root.pointer(r.trim_start_matches('#'))
                .expect("a definition"),
        ),
        None => s,
    }
}

fn known_keys(root: &serde_json::Value, s: &serde_json::Value, v: &toml::Value, at: &str) {
    let s = resolve(root, s);
    match v {
        toml::Value::Table(t) => {
            // An optional section is `anyOf: [section, null]`.
            let s = s["anyOf"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] != "null"))
                .map_or(s, |x| resolve(root, x));
            for (k, v) in t {
                let Some(sub) = s["properties"].get(k) else {
                    panic!("{at}: key {k:?} is not in the schema: {s}");
                };
                known_keys(root, sub, v, &format!("{at}: {k}"));
            }
        }
        toml::Value::Array(items) if s["items"].is_object() => {
            for item in items {
                known_keys(root, &s["items"], item, at);
            }
        }
        _ => {}
    }
}

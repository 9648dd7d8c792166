//! The JSON Schema of a model's scenario files, for editors with a TOML
//! language server (taplo, Even Better TOML): generated from the same
//! types the parser reads, the common ones ([`ScenarioFile`]) and the
//! model's ([`Model::schema`]). One schema per model, checked in under
//! `docs/schema/` and kept current by `tests/schema.rs`.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use super::{Model, ScenarioFile};

/// Where the schema of `model` is checked in, from the repository root.
pub fn path(model: &dyn Model) -> String {
    format!("docs/schema/{}.json", model.name())
}

/// The schema of `model`'s scenario files.
pub fn schema(model: &dyn Model) -> Value {
    let mut generator = SchemaSettings::draft07().into_generator();
    let sections = model.schema(&mut generator);
    let mut root = generator.into_root_schema_for::<ScenarioFile>().to_value();
    root["title"] = format!("heartsim scenario ({})", model.name()).into();
    root["description"] = format!("{} See {}.", model.about(), model.docs()).into();

    let header = &mut root["definitions"]["Header"]["properties"];
    header["model"]["const"] = model.name().into();
    header["profile"]["enum"] = model.profiles().iter().map(|p| p.name).collect();
    header["profile"]["description"] = model
        .profiles()
        .iter()
        .map(|p| format!("{}: {}", p.name, p.about))
        .collect::<Vec<_>>()
        .join("; ")
        .into();
    header["invariants"]["items"] = json!({ "enum": model.invariants() });

    if let Some(config) = sections.config {
        root["properties"]["config"] = config.to_value();
    }

    // The model's node keys join the common ones, and no others are allowed.
    let node = sections.node.to_value();
    let common = &mut root["definitions"]["NodeSection"];
    for (key, schema) in node["properties"].as_object().into_iter().flatten() {
        common["properties"][key] = schema.clone();
    }
    if let Some(required) = node["required"].as_array() {
        let all = common["required"]
            .as_array_mut()
            .expect("name and kind are required");
        all.extend(required.iter().cloned());
    }
    common["properties"]["host"] = json!({
        "description": "The [[host]] this node (a process) runs on: it shares the host's clock and disk.",
        "type": "string"
    });
    common["additionalProperties"] = false.into();
    root
}

/// The schema as the checked-in file holds it.
pub fn text(model: &dyn Model) -> String {
    let mut text = serde_json::to_string_pretty(&schema(model)).expect("JSON values serialize");
    text.push('\n');
    text
}

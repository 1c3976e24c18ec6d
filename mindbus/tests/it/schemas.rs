//! The committed JSON Schemas are current, and the golden examples beside them mean the same
//! thing to the schemas as to this crate's decoders.

use std::path::{Path, PathBuf};

use mindbus::wire::{
    Command, CommandResult, DeadLetter, EntryId, Event, Fields, Origin, WireError, schema,
};
use serde_json::Value;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

#[test]
fn committed_schemas_are_current() {
    let mut stale = Vec::new();
    for (name, schema) in schema::entry_schemas() {
        let path = schemas_dir().join(format!("{name}.schema.json"));
        let fresh = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        if std::fs::read_to_string(&path).ok().as_deref() != Some(fresh.as_str()) {
            std::fs::write(&path, fresh).unwrap();
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "schemas were stale and have been regenerated; commit them: {stale:?}"
    );
}

fn decode(kind: &str, fields: Fields) -> Result<(), WireError> {
    let origin = Origin {
        stream: "mindbus:test",
        entry: EntryId {
            ms: 1_763_978_400_000,
            seq: 0,
        },
    };
    match kind {
        "command" => Command::decode(fields, origin).map(drop),
        "result" => CommandResult::decode(fields, origin).map(drop),
        "event" => Event::decode(fields, origin).map(drop),
        "deadletter" => DeadLetter::decode(fields).map(drop),
        other => panic!("unknown example kind {other}"),
    }
}

fn examples(dir: &Path) -> Vec<(String, Value)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn as_fields(example: &Value) -> Fields {
    let object = example
        .as_object()
        .expect("an example is a JSON object of strings");
    object
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .expect("every field is a string")
                    .as_bytes()
                    .to_vec(),
            )
        })
        .collect()
}

fn validator(kind: &str) -> jsonschema::Validator {
    let path = schemas_dir().join(format!("{kind}.schema.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn kind_of(file: &str) -> &str {
    file.split('.').next().unwrap()
}

#[test]
fn golden_examples_are_valid_for_schema_and_decoder() {
    let all = examples(&schemas_dir().join("examples"));
    assert!(all.len() >= 6, "golden examples are missing");
    for (file, example) in all {
        let kind = kind_of(&file);
        let errors: Vec<String> = validator(kind)
            .iter_errors(&example)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "{file} breaks the {kind} schema: {errors:?}"
        );
        decode(kind, as_fields(&example)).unwrap_or_else(|e| panic!("{file} does not decode: {e}"));
    }
}

#[test]
fn invalid_examples_are_rejected_by_both() {
    let all = examples(&schemas_dir().join("examples/invalid"));
    assert!(!all.is_empty(), "invalid examples are missing");
    for (file, example) in all {
        let kind = kind_of(&file);
        assert!(
            !validator(kind).is_valid(&example),
            "the {kind} schema accepts {file}"
        );
        assert!(
            decode(kind, as_fields(&example)).is_err(),
            "the decoder accepts {file}"
        );
    }
}

//! `docs/security.md` names, for each guarantee, the test that performs the attack. This test fails when a named
//! test no longer exists (renamed, moved or deleted), so the threat model cannot point at nothing.

use std::path::Path;

/// Every `` `path/to/file.rs::test_name` `` reference in the text.
fn references(text: &str) -> Vec<(String, String)> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|quoted| {
            let (file, name) = quoted.rsplit_once("::")?;
            (file.ends_with(".rs") && !name.is_empty()).then(|| (file.to_owned(), name.to_owned()))
        })
        .collect()
}

#[test]
fn every_test_the_threat_model_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let refs = references(&doc);
    assert!(
        refs.len() >= 20,
        "the threat model names its tests: {refs:?}"
    );
    let missing: Vec<String> = refs
        .iter()
        .filter(|(file, name)| {
            let source = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            !source.contains(&format!("fn {name}("))
        })
        .map(|(file, name)| format!("{file}::{name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/security.md names tests that do not exist: {missing:#?}"
    );
}

#[test]
fn references_are_read_from_code_spans_only() {
    let refs = references("a `x.rs::one` b `not a ref` `y.rs::two`, `z.md::no`");
    assert_eq!(
        refs,
        vec![("x.rs".into(), "one".into()), ("y.rs".into(), "two".into())]
    );
}

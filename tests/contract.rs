//! The contract (`docs/contract.md`, the `contract` docs module) lists, under
//! each rule, the tests named after it. This keeps the list true: every test
//! named `b<N>_…` in the crate is listed under rule B<N>, with its file, and
//! every listed test exists.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(rule, test, file)` for every `fn b<N>_…` in `src/` and `tests/`.
fn tests_named_after_rules(root: &Path) -> BTreeSet<(String, String, String)> {
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        for line in fs::read_to_string(&file).unwrap().lines() {
            let line = line.trim_start();
            let Some(rest) = line
                .strip_prefix("async fn ")
                .or_else(|| line.strip_prefix("fn "))
            else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let Some((rule, _)) = name.split_once('_') else {
                continue;
            };
            if rule.len() > 1
                && rule.starts_with('b')
                && rule[1..].chars().all(|c| c.is_ascii_digit())
            {
                found.insert((rule.to_uppercase(), name, relative.clone()));
            }
        }
    }
    found
}

/// `(rule, test, file)` for every `- \`test\` (file)` line of the contract.
fn tests_listed(contract: &str) -> BTreeSet<(String, String, String)> {
    let mut rule = String::new();
    let mut listed = BTreeSet::new();
    for line in contract.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            rule = heading.split_whitespace().next().unwrap_or("").to_owned();
        } else if let Some(item) = line.strip_prefix("- `") {
            let (test, rest) = item.split_once('`').unwrap();
            let file = rest.trim().trim_start_matches('(').trim_end_matches(')');
            listed.insert((rule.clone(), test.to_owned(), file.to_owned()));
        }
    }
    listed
}

#[test]
fn every_test_named_after_a_rule_is_listed_under_it_in_the_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let contract = fs::read_to_string(root.join("docs/contract.md")).unwrap();
    let found = tests_named_after_rules(root);
    let listed = tests_listed(&contract);
    assert!(found.len() > 100, "only {} tests found", found.len());
    let missing: Vec<_> = found.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(missing.is_empty(), "not in docs/contract.md: {missing:#?}");
    assert!(stale.is_empty(), "listed but not found: {stale:#?}");
    // Every rule from B1 to B11 has its heading and at least one test.
    for n in 1..=11 {
        let rule = format!("B{n}");
        assert!(contract.contains(&format!("\n## {rule} ")), "{rule}");
        assert!(
            listed.iter().any(|(r, _, _)| *r == rule),
            "{rule} has no test"
        );
    }
}

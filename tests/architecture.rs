//! The layer table of `src/lib.rs` and the README ("Architecture") holds: every `crate::`
//! path in `src/` points to a module in a lower layer, and no file-level import cycle exists.
//!
//! Reads the sources as text, the way a reviewer would: `crate::…` and `super::…` paths
//! (including `use crate::{a, b::c}` groups) outside comments and outside the trailing
//! `#[cfg(test)]` module. A new top-level module fails here until it is given a layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may import only from layers below its own. Keep in step with
/// `src/lib.rs` and the README's "Architecture".
const LAYERS: &[&[&str]] = &[
    &["clock"],
    &["pki", "disk", "privileges", "systemd", "update"],
    &["kv", "qrs"],
    &["tasks"],
    &["authz"],
    &["config"],
    &["security", "metrics"],
    &["http"],
    &["api"],
    &["app", "check", "init", "logging"],
    &["appliance"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` and `src/main.rs` → `crate`.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_string()
    } else {
        parts.join("::")
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code that ships: up to the first `#[cfg(test)]`, without `//` comments.
fn shipped_code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Module paths named after each `prefix` (`crate::` or `super::`): `a` and, when the text
/// goes on, `a::b`; inside a `{…}` group, each item's first one or two segments.
fn paths_after(code: &str, prefix: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => return true,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group[..end].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                        item_start = false;
                        found.push(first_two(&group[i..end]));
                    }
                    _ => {}
                }
            }
        } else {
            let first = ident_at(rest);
            if !first.is_empty() {
                found.push(first_two(rest));
            }
        }
    }
    found
}

fn first_two(text: &str) -> (String, Option<String>) {
    let first = ident_at(text);
    let second = text[first.len()..]
        .strip_prefix("::")
        .map(ident_at)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    (first.to_string(), second)
}

/// The file-level import graph: module path → module paths it names.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_path(src, f)).collect();
    let resolve = |base: &str, (a, b): (String, Option<String>)| {
        let a = if base.is_empty() {
            a
        } else {
            format!("{base}::{a}")
        };
        match b.map(|b| format!("{a}::{b}")) {
            Some(ab) if modules.contains(&ab) => ab,
            _ => a,
        }
    };
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_path(src, file);
        let code = shipped_code(&std::fs::read_to_string(file).unwrap());
        let mut deps = BTreeSet::new();
        for path in paths_after(&code, "crate::") {
            deps.insert(resolve("", path));
        }
        // `super::` from `a::b` (a file under `a/`) names a sibling in `a`.
        if let Some((parent, _)) = module.rsplit_once("::") {
            for path in paths_after(&code, "super::") {
                deps.insert(resolve(parent, path));
            }
        }
        deps.retain(|d| d != &module && modules.contains(d));
        graph.insert(module, deps);
    }
    graph
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn every_import_points_down_the_layer_table() {
    let graph = import_graph(&src_dir());
    let mut problems = Vec::new();
    for (module, deps) in &graph {
        if module == "crate" {
            continue; // lib.rs declares the modules; main.rs is the binary on top of them all
        }
        let Some(own) = layer_of(top(module)) else {
            problems.push(format!(
                "{module}: its top-level module {} has no layer in LAYERS",
                top(module)
            ));
            continue;
        };
        for dep in deps.iter().filter(|d| top(d) != top(module)) {
            match layer_of(top(dep)) {
                Some(layer) if layer < own => {}
                Some(layer) => problems.push(format!(
                    "{module} (layer {own}) imports {dep} (layer {layer}): imports may only \
                     point to lower layers"
                )),
                None => problems.push(format!("{module} imports {dep}, which has no layer")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_file_level_import_cycle() {
    let graph = import_graph(&src_dir());
    // Depth-first search; a back edge to a module on the current path is a cycle.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[start..].iter().map(|m| m.to_string()).collect();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for dep in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// The checker itself: it sees grouped, nested and `super::` imports, and ignores comments
/// and the test module, so a passing run means something.
#[test]
fn the_reader_finds_what_it_must() {
    let code = shipped_code(
        "use crate::{a::B, c::{d, e}, f};\nuse super::g::H;\n// crate::comment\nfn x() { crate::i::j(); }\n#[cfg(test)]\nmod tests { use crate::k; }\n",
    );
    let crate_paths: Vec<String> = paths_after(&code, "crate::")
        .into_iter()
        .map(|(a, b)| b.map_or(a.clone(), |b| format!("{a}::{b}")))
        .collect();
    assert_eq!(crate_paths, ["a::B", "c", "f", "i::j"]);
    assert_eq!(paths_after(&code, "super::")[0].0, "g");
    assert_eq!(layer_of("kv"), Some(2));
    assert!(layer_of("http") > layer_of("kv"));
}

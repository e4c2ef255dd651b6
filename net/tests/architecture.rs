//! `docs/architecture.md` holds to the code: each crate's table of modules and their imports
//! is what the sources say (`crate::x` paths outside tests), and no module of a crate imports
//! one that imports it back, directly or around a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The leading `[a-z_][a-z0-9_]*` of `s`.
fn ident(s: &str) -> &str {
    let end =
        s.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(s.len());
    let id = &s[..end];
    if id.starts_with(|c: char| c.is_ascii_digit()) {
        ""
    } else {
        id
    }
}

/// The modules a source file names as `crate::x` or in `crate::{x, y::z}`, outside its tests
/// and comments.
fn imports(text: &str) -> BTreeSet<String> {
    let mut code = text;
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]") {
        let at = from + at;
        if code[at + "#[cfg(test)]".len()..].trim_start().starts_with("mod tests") {
            code = &code[..at];
            break;
        }
        from = at + 1;
    }
    let code: String =
        code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(is_ident) {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let id = ident(part.trim_start());
                if !id.is_empty() {
                    out.insert(id.to_string());
                }
            }
        } else {
            let id = ident(after);
            if !id.is_empty() {
                out.insert(id.to_string());
            }
        }
    }
    out
}

/// Every top-level module of a crate (`src/x.rs`, `src/x/**`) and the modules it imports.
fn graph(crate_dir: &Path) -> Graph {
    let src = crate_dir.join("src");
    let mut g = Graph::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("a source directory") {
            let path = e.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let first =
                rel.components().next().expect("a component").as_os_str().to_string_lossy().to_string();
            let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
            if matches!(module.as_str(), "lib" | "main" | "bin") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            let found = imports(&text);
            g.entry(module.clone()).or_default().extend(found.into_iter().filter(|m| *m != module));
        }
    }
    let modules: BTreeSet<String> = g.keys().cloned().collect();
    for deps in g.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    g
}

/// Each crate's table in the document: `### \`crate\`` then rows `| \`module\` | \`a\`, \`b\` |`.
fn documented(doc: &str) -> BTreeMap<String, Graph> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            current = Some(h.trim().trim_matches('`').to_string());
            continue;
        }
        if line.starts_with("## ") {
            current = None;
            continue;
        }
        let Some(krate) = &current else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() != 4 || !cells[1].starts_with('`') {
            continue;
        }
        let module = cells[1].trim_matches('`').to_string();
        let deps: BTreeSet<String> = cells[2]
            .split(',')
            .map(|d| d.trim().trim_matches('`').to_string())
            .filter(|d| !d.is_empty() && d != "-")
            .collect();
        out.entry(krate.clone()).or_insert_with(Graph::new).insert(module, deps);
    }
    out
}

/// A circle of imports, if any: the modules on it.
fn circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(g: &Graph, m: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            return Some(path[at..].to_vec());
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, d, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

#[test]
fn the_documented_module_imports_are_the_code_s_and_form_no_circle() {
    let top = workspace();
    let doc = std::fs::read_to_string(top.join("docs/architecture.md")).expect("docs/architecture.md");
    let tables = documented(&doc);
    for krate in ["disks", "engine", "net"] {
        let code = graph(&top.join(krate));
        assert!(code.len() > 5, "{krate}: {} modules found", code.len());
        if let Some(c) = circle(&code) {
            panic!("{krate}: modules import each other in a circle: {}", c.join(" -> "));
        }
        let doc =
            tables.get(krate).unwrap_or_else(|| panic!("docs/architecture.md has no table for {krate}"));
        for (m, deps) in &code {
            match doc.get(m) {
                None => panic!("{krate}: module {m} is not in docs/architecture.md"),
                Some(d) if d != deps => panic!(
                    "{krate}: {m} imports {:?}, docs/architecture.md says {:?}",
                    deps.iter().collect::<Vec<_>>(),
                    d.iter().collect::<Vec<_>>()
                ),
                Some(_) => {}
            }
        }
        for m in doc.keys() {
            assert!(
                code.contains_key(m),
                "{krate}: docs/architecture.md names {m}, which the code does not have"
            );
        }
    }
}

#[test]
fn the_scanner_finds_imports_and_circles() {
    let text = "use crate::a::X;\nuse crate::{b, c::Y};\n// crate::commented\nfn f() { notcrate::d(); }\n#[cfg(test)]\nmod tests { use crate::e; }";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c"]);
    let mut g = Graph::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), BTreeSet::new());
    assert_eq!(circle(&g), None);
    g.insert("c".into(), ["a".to_string()].into());
    assert_eq!(circle(&g).map(|c| c.len()), Some(3));
}

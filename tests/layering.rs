//! The shape of the code, checked: imports between the top-level modules
//! of every crate in the workspace (`src/`, `bench/src`, `ldap-worker`,
//! `sqs-feed`, `cluster-bus`) have no circle; in `src/` they point one way
//! (`main` → `lib` → `reactor` → `setup` → `hub` → pure modules); and no file of
//! `src/` is over 1 200 lines. Reads the sources as text.
//!
//! What counts as an import of module `b` by module `a` (a node is a
//! top-level module: `src/b.rs` or `src/b/`, or the crate root `lib` /
//! `main`): any path in `a`'s non-test code that names `crate::b::…`,
//! `crate::{…, b::…}`, `super::…` reaching the root and then `b`, or (in a
//! root file) `b::…`; from `src/main.rs`, `pubsubd::b::…`. A path whose
//! first segment after the root is not a module (`crate::Config`,
//! `crate::ListenerKind`: something defined or re-exported at the root)
//! is an import of the root itself. Comments, strings and `#[cfg(test)]`
//! items (and `tests.rs` files) are left out. The modules of a crate are
//! the ones its root file declares (`mod b;`), so a lead adding a module
//! needs to change nothing here for the general rules to cover it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------
// tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Rust source as identifiers, `::` and punctuation: no comments, no
/// string, char or number literals, no lifetimes.
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1);
        } else if (ch == 'r' || ch == 'b') && raw_string_start(&c, i).is_some() {
            let (hashes, quote) = raw_string_start(&c, i).expect("checked");
            i = quote + 1;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if ch == 'b' && next == Some('"') {
            i = skip_string(&c, i + 2);
        } else if ch == 'b' && next == Some('\'') {
            i = skip_char(&c, i + 1);
        } else if ch == '\'' {
            i = skip_char(&c, i);
        } else if ch == 'r' && next == Some('#') && c.get(i + 2).is_some_and(|&x| ident_start(x)) {
            // a raw identifier
            let start = i + 2;
            i = start;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (ident_char(c[i]) || c[i] == '.' && c.get(i + 1) != Some(&'.')) {
                i += 1;
            }
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// After the opening quote: the index past the closing one.
fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// At `'`: past a char literal (`'a'`, `'\n'`, `'\u{1F600}'`), or past the
/// quote of a lifetime (`'a`).
fn skip_char(c: &[char], i: usize) -> usize {
    if c.get(i + 1) == Some(&'\\') {
        let mut j = i + 2;
        while j < c.len() && c[j] != '\'' {
            j += 1;
        }
        j + 1
    } else if c.get(i + 2) == Some(&'\'') {
        i + 3
    } else {
        i + 1
    }
}

/// `r"`, `r#"`, `br"`, `br#"` at `i`: (number of `#`, index of the quote).
fn raw_string_start(c: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None; // the end of an identifier such as `bar"`: not a prefix
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some((hashes, j))
}

/// `tokens` without the items under `#[cfg(test)]`.
fn without_test_items(toks: Vec<Tok>) -> Vec<Tok> {
    let cfg_test = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i..].starts_with(&cfg_test) {
            i = end_of_item(&toks, i + cfg_test.len());
        } else {
            out.push(toks[i].clone());
            i += 1;
        }
    }
    out
}

/// From the start of an item (its attributes included): the index past
/// its end: the `;` of `use`/`const`/`static`/`type` and of `mod x;`, else
/// the item's first `{ … }` block.
fn end_of_item(toks: &[Tok], start: usize) -> usize {
    let semicolon_items = ["use", "const", "static", "type", "extern"];
    let to_semicolon = toks[start..]
        .iter()
        .find_map(|t| match t {
            Tok::Ident(w) if semicolon_items.contains(&w.as_str()) => Some(true),
            Tok::Ident(w) if !["pub", "crate", "in", "self", "super"].contains(&w.as_str()) => {
                Some(false)
            }
            _ => None,
        })
        .unwrap_or(false);
    let mut depth = 0usize;
    let mut i = start;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') | Tok::Punct('(') | Tok::Punct('[') => depth += 1,
            Tok::Punct('}') | Tok::Punct(')') | Tok::Punct(']') => {
                depth = depth.saturating_sub(1);
                if depth == 0 && !to_semicolon && toks[i] == Tok::Punct('}') {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

// ---------------------------------------------------------------------------
// paths

/// How paths in one file resolve.
struct FileCtx<'a> {
    /// The file's module path (`src/hub/requests.rs` → `["hub", "requests"]`;
    /// a root file → `[]`).
    module: Vec<String>,
    /// The crate's top-level modules.
    modules: &'a BTreeSet<String>,
    /// The node standing for the crate root (`lib` or `main`).
    root: &'a str,
    /// In a binary next to a library: the library's name (`pubsubd`), whose
    /// paths resolve like `crate::` ones do in the library.
    extern_root: Option<&'a str>,
}

/// The top-level modules (or the root) that `toks` name.
fn imports(toks: &[Tok], ctx: &FileCtx) -> BTreeSet<String> {
    let ident = |i: usize| match toks.get(i) {
        Some(Tok::Ident(w)) => Some(w.as_str()),
        _ => None,
    };
    let sep = |i: usize| toks.get(i) == Some(&Tok::PathSep);
    let target = |name: &str| {
        if ctx.modules.contains(name) {
            name.to_owned()
        } else {
            ctx.root.to_owned()
        }
    };
    let mut out = BTreeSet::new();
    // Inline `mod x { … }`: (name, brace depth it closes at).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
                continue;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            _ => {}
        }
        if ident(i) == Some("mod") && toks.get(i + 2) == Some(&Tok::Punct('{')) {
            if let Some(name) = ident(i + 1) {
                inline.push((name.to_owned(), depth + 1));
            }
        }
        // Only the first segment of a path: not after `::`, not `$crate`.
        let starts_path = i == 0 || !matches!(toks[i - 1], Tok::PathSep | Tok::Punct('$'));
        let Some(word) = ident(i).filter(|_| starts_path && sep(i + 1)) else {
            i += 1;
            continue;
        };
        let here: Vec<&str> = ctx
            .module
            .iter()
            .map(String::as_str)
            .chain(inline.iter().map(|(n, _)| n.as_str()))
            .collect();
        // Where the path's segments after the root begin, if it reaches
        // the root.
        let mut after_root = None;
        if word == "crate" || Some(word) == ctx.extern_root || word == "self" && here.is_empty() {
            after_root = Some(i + 2);
        } else if word == "super" {
            let mut j = i;
            let mut ups = 0;
            while ident(j) == Some("super") && sep(j + 1) {
                ups += 1;
                j += 2;
            }
            if ups >= here.len() {
                after_root = Some(j);
            }
            i = j;
        } else if here.is_empty() && ctx.modules.contains(word) {
            // a root file naming its own module
            out.insert(word.to_owned());
        }
        if let Some(j) = after_root {
            if let Some(name) = ident(j) {
                out.insert(target(name));
            } else if toks.get(j) == Some(&Tok::Punct('{')) {
                // `{a::X, b, c::{Y, Z}}`: the first segment of each member
                let mut group = 0usize;
                let mut k = j;
                let mut first = true;
                while k < toks.len() {
                    match &toks[k] {
                        Tok::Punct('{') => {
                            group += 1;
                            first = group == 1;
                        }
                        Tok::Punct('}') => {
                            group -= 1;
                            if group == 0 {
                                break;
                            }
                        }
                        Tok::Punct(',') if group == 1 => first = true,
                        Tok::Ident(name) if first && group == 1 => {
                            if name != "self" {
                                out.insert(target(name));
                            }
                            first = false;
                        }
                        _ => first = false,
                    }
                    k += 1;
                }
            } else {
                // `crate::*`
                out.insert(ctx.root.to_owned());
            }
        }
        i += 1;
    }
    out
}

/// The modules a root file declares (`mod x;`, `pub mod x;`, under any
/// cfg but `test`).
fn declared_modules(root: &[Tok]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut depth = 0usize;
    for (i, t) in root.iter().enumerate() {
        match t {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth = depth.saturating_sub(1),
            Tok::Ident(w) if w == "mod" && depth == 0 => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct(';'))) =
                    (root.get(i + 1), root.get(i + 2))
                {
                    out.insert(name.clone());
                }
            }
            _ => {}
        }
    }
    out
}

fn code_of(file: &Path) -> Vec<Tok> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    without_test_items(tokens(&text))
}

/// One crate's import graph: each top-level module (and `lib` / `main`) →
/// the modules its non-test code imports. `lib_name` is the library's
/// name as its binary (`src/main.rs`) spells it, when there are both.
fn crate_graph(src: &Path, lib_name: Option<&str>) -> Graph {
    let lib = src.join("lib.rs");
    let (root_file, root) = if lib.exists() {
        (lib, "lib")
    } else {
        (src.join("main.rs"), "main")
    };
    let modules = declared_modules(&code_of(&root_file));
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let last = parts.pop().expect("a file name");
        let stem = last.trim_end_matches(".rs").to_owned();
        if stem == "tests" {
            continue; // `#[cfg(test)] mod tests;`
        }
        let (node, module, extern_root) = match (parts.is_empty(), stem.as_str()) {
            (true, "lib") => ("lib".to_owned(), Vec::new(), None),
            (true, "main") if root == "lib" => ("main".to_owned(), Vec::new(), lib_name),
            (true, "main") => ("main".to_owned(), Vec::new(), None),
            _ => {
                if stem != "mod" {
                    parts.push(stem);
                }
                let top = parts[0].clone();
                if !modules.contains(&top) {
                    continue; // another binary's root (`src/bin/`, `floor.rs`)
                }
                (top, parts, None)
            }
        };
        let ctx = FileCtx {
            module,
            modules: &modules,
            root,
            extern_root,
        };
        let mut names = imports(&code_of(&file), &ctx);
        names.remove(&node);
        graph.entry(node).or_default().extend(names);
    }
    graph
}

fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn src() -> PathBuf {
    workspace().join("src")
}

fn importers_of<'g>(graph: &'g Graph, module: &'g str) -> impl Iterator<Item = &'g str> {
    graph
        .iter()
        .filter(move |(_, names)| names.contains(module))
        .map(|(m, _)| m.as_str())
}

// ---------------------------------------------------------------------------
// the rules

#[test]
fn src_imports_point_one_way() {
    let graph = crate_graph(&src(), Some("pubsubd"));
    // The checker sees the tree: the edges everyone knows are there.
    for (from, to) in [
        ("main", "lib"),
        ("lib", "reactor"),
        ("reactor", "setup"),
        ("setup", "hub"),
        ("reactor", "hub"),
    ] {
        assert!(
            graph.get(from).is_some_and(|names| names.contains(to)),
            "{from} → {to} not seen: {graph:#?}"
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import circle in src/: {}", cycle.join(" → "));
    }
    // The loop owns I/O, the hub the state: the hub never reaches back,
    // and the start-up module builds the hub's parts without the loop.
    assert!(!graph["hub"].contains("reactor"), "hub imports reactor");
    assert!(!graph["hub"].contains("setup"), "hub imports setup");
    assert!(!graph["setup"].contains("reactor"), "setup imports reactor");
    // Nothing imports the binary, and only the binary imports from the
    // crate root: a module names `crate::config::Config`, never
    // `crate::Config`, so that lib.rs can use every module.
    let from_root: Vec<&str> = importers_of(&graph, "lib")
        .filter(|m| *m != "main")
        .collect();
    assert!(
        from_root.is_empty(),
        "these modules import from the crate root (lib.rs): {from_root:?}"
    );
    let of_main: Vec<&str> = importers_of(&graph, "main").collect();
    assert!(of_main.is_empty(), "{of_main:?} import main.rs");
    // Pure modules: everything but the wiring. They never import the hub
    // or the reactor; a new module is pure unless it is named here.
    let wiring = ["main", "lib", "reactor", "setup", "hub"];
    for (module, names) in &graph {
        if wiring.contains(&module.as_str()) {
            continue;
        }
        for upper in ["hub", "reactor"] {
            assert!(
                !names.contains(upper),
                "{module} imports {upper}; the pure modules never do (or name {module} among the wiring in tests/layering.rs)"
            );
        }
    }
}

/// The other crates of the workspace: no circle, and (as in `src/`) no
/// module imports from its crate's root.
#[test]
fn workspace_crates_have_no_import_circle() {
    for (dir, min_modules) in [
        ("bench/src", 10),
        ("ldap-worker/src", 3),
        ("sqs-feed/src", 5),
        ("cluster-bus/src", 5),
    ] {
        let graph = crate_graph(&workspace().join(dir), None);
        assert!(graph.len() > min_modules, "{dir}: {graph:#?}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("import circle in {dir}: {}", cycle.join(" → "));
        }
        for root in ["lib", "main"] {
            let importers: Vec<&str> = importers_of(&graph, root).collect();
            assert!(
                importers.is_empty(),
                "{dir}: {importers:?} import from the crate root ({root}.rs)"
            );
        }
    }
}

#[test]
fn no_source_file_is_over_1200_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in files {
        let lines = fs::read_to_string(&file).expect("read").lines().count();
        assert!(lines <= 1200, "{} has {lines} lines", file.display());
    }
}

// ---------------------------------------------------------------------------
// the checker itself

/// The imports of `text` as the file `path` (under `src/`) of a crate whose
/// modules are `modules` and whose root is `lib`.
fn imports_of(path: &str, text: &str, modules: &[&str]) -> Vec<String> {
    let modules: BTreeSet<String> = modules.iter().map(|m| m.to_string()).collect();
    let mut module: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if module.last().is_some_and(|m| m == "mod" || m == "lib") {
        module.pop();
    }
    let ctx = FileCtx {
        module,
        modules: &modules,
        root: "lib",
        extern_root: None,
    };
    imports(&without_test_items(tokens(text)), &ctx)
        .into_iter()
        .collect()
}

#[test]
fn a_circle_is_found() {
    let mut graph = Graph::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.get_mut("c").expect("c").clear();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn the_checker_reads_paths_groups_super_and_root_items() {
    let mods = ["hub", "reactor", "conn", "config", "tls"];
    // A type imported from the crate root is an import of `lib`.
    assert_eq!(
        imports_of("reactor.rs", "use crate::ListenerKind;", &mods),
        ["lib"]
    );
    assert_eq!(
        imports_of("reactor.rs", "use crate::{conn::Conn, hub, Config};", &mods),
        ["conn", "hub", "lib"]
    );
    assert_eq!(
        imports_of(
            "reactor.rs",
            "use crate::{hub::{Hub, HubParts}, tls::{self, Tls}};",
            &mods
        ),
        ["hub", "tls"]
    );
    // `super::` from a top-level file is the root; from hub/x.rs it is hub.
    assert_eq!(
        imports_of("conn.rs", "use super::config::Config;", &mods),
        ["config"]
    );
    assert_eq!(imports_of("conn.rs", "use super::Thing;", &mods), ["lib"]);
    assert!(imports_of("hub/requests.rs", "use super::Hub;", &mods).is_empty());
    assert_eq!(
        imports_of("hub/requests.rs", "use super::super::reactor::X;", &mods),
        ["reactor"]
    );
    // An inline module is one more level.
    assert!(imports_of("conn.rs", "mod off { use super::Conn; }", &mods).is_empty());
    assert_eq!(
        imports_of(
            "conn.rs",
            "mod off { use super::super::hub; } fn f() {}",
            &mods
        ),
        ["hub"]
    );
    // Inside an expression, not only in `use`.
    assert_eq!(
        imports_of(
            "conn.rs",
            "fn f() { let x = crate::hub::Hub::new(); }",
            &mods
        ),
        ["hub"]
    );
    // The root file names its modules without `crate::`.
    assert_eq!(
        imports_of(
            "lib.rs",
            "pub use hub::AclFile; fn f() { reactor::run(); }",
            &mods
        ),
        ["hub", "reactor"]
    );
    // Comments, strings, `$crate` and test code do not count.
    let ignored = "// crate::hub\n/* crate::reactor */ const S: &str = \"crate::hub\";\n\
                   const R: &str = r#\"crate::hub\"#; const C: char = '\"';\n\
                   macro_rules! m { () => { $crate::hub::X } }\n\
                   fn f<'a>(x: &'a str) {}\n\
                   #[cfg(test)]\nmod tests { use crate::reactor; }\n\
                   #[cfg(test)]\nuse crate::{hub, reactor};\n\
                   fn g() -> u8 { crate::conn::X }";
    assert_eq!(imports_of("config.rs", ignored, &mods), ["conn"]);
}

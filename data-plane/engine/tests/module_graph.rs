//! The engine's top-level modules form a DAG: no module reaches, through any chain of
//! references, back to itself. So each module can be read, changed and tested knowing only
//! the modules below it (issue 16).
//!
//! The check reads the sources from `src/`, starting at `lib.rs` and following `mod`
//! declarations, so a file outside the module tree is ignored and a new file is covered as
//! soon as it is declared. A file or inline module belongs to its top-level module
//! (`src/index/read.rs` counts as `index`, `mod avx2 { … }` in `src/distance.rs` as
//! `distance`).
//! Every path in code is a reference: `crate::x…`, `$crate::x…`, and `super::…` /
//! `self::…` resolved against the module it appears in. A name the crate root re-exports
//! (`crate::Index`) is a reference to the module it comes from (`index`).
//!
//! Code that exists only in test or fuzzing builds is left out: items under
//! `#[cfg(test)]` (so `test_support`, every `tests`/`proptests` module and their files) and
//! under `#[cfg(feature = "fuzzing")]` (the `fuzzing` module): tests may use any module.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs,
    path::{Path, PathBuf},
};

#[test]
fn the_engine_modules_form_a_dag() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = Graph::read(&src);
    // The walk found the crate: a broken reader must not pass by finding nothing.
    for module in ["index", "wal", "engine", "namespace", "codec", "flush"] {
        assert!(
            graph.modules.contains(module),
            "module `{module}` not found; the reader of src/ is broken"
        );
    }
    assert!(
        graph.edges.len() > graph.modules.len(),
        "only {} references between {} modules; the reader of src/ is broken",
        graph.edges.len(),
        graph.modules.len()
    );
    println!("{}", graph.layers());
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "the engine's modules have import cycles (each `a -> b` names where `a` uses `b`; \
         move what both need into a lower module):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn a_cycle_is_found_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "lib.rs",
            "//! crate\nmod low;\nmod mid;\nmod high;\n#[cfg(test)]\nmod test_support;\n\
             pub use high::High;\n",
        ),
        (
            "low.rs",
            "use crate::{mid::Mid, limits};\n#[cfg(test)]\nmod tests { use crate::High; }\n",
        ),
        ("mid.rs", "mod inner;\npub struct Mid;\n"),
        (
            "mid/inner.rs",
            "// crate::high in a comment is no reference\n\
             fn f() -> &'static str { let _ = '\\''; \"crate::low\" }\n\
             fn g() { super::super::High::new(); }\n",
        ),
        ("high.rs", "pub struct High;\n"),
        ("test_support.rs", "use crate::low;\n"),
    ];
    let write = |files: &[(&str, &str)]| {
        for (name, text) in files {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    };
    write(&files);
    // `limits` is neither a module nor a re-export here.
    let unresolved = std::panic::catch_unwind(|| Graph::read(dir.path()));
    assert!(unresolved.is_err(), "an unknown crate-root name must fail");

    write(&[(
        "low.rs",
        "use crate::mid::Mid;\n#[cfg(test)]\nmod tests { use crate::High; }\n",
    )]);
    let graph = Graph::read(dir.path());
    assert_eq!(
        graph.modules,
        BTreeSet::from(["high".to_owned(), "low".to_owned(), "mid".to_owned()])
    );
    let edges: Vec<_> = graph.edges.keys().cloned().collect();
    assert_eq!(
        edges,
        [
            ("low".to_owned(), "mid".to_owned()),
            ("mid".to_owned(), "high".to_owned())
        ]
    );
    assert!(graph.cycles().is_empty());

    // `high` reaching down to `low` closes the cycle low -> mid -> high -> low.
    write(&[("high.rs", "pub struct High;\nfn f() { crate::low::g(); }\n")]);
    let cycles = Graph::read(dir.path()).cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("high -> low (high.rs:2) -> mid (low.rs:1) -> high (mid/inner.rs:3)"),
        "{}",
        cycles[0]
    );
}

/// References between top-level modules.
struct Graph {
    modules: BTreeSet<String>,
    /// `(from, to)` → where `from` first refers to `to` (`file:line`).
    edges: BTreeMap<(String, String), String>,
}

impl Graph {
    /// Reads the crate whose root is `src/lib.rs`. Panics on a path it cannot resolve.
    fn read(src: &Path) -> Graph {
        let root = Source::read(src, &src.join("lib.rs"));
        let mut modules = BTreeSet::new();
        let mut uses = Vec::new();
        let mut files = Vec::new();
        root.walk(&[], &mut |item| match item {
            Item::Module { name, file } => {
                modules.insert(name.clone());
                if let Some(file) = file {
                    files.push((vec![name], file));
                }
            }
            Item::Use { path, bound, .. } => {
                if let (Some(first), Some(bound)) = (path.first(), bound) {
                    uses.push((bound, first.clone()));
                }
            }
            Item::Path { .. } => {}
        });
        // Names the root re-exports from its modules (not `use std::…`).
        let exports: BTreeMap<String, String> = uses
            .into_iter()
            .filter(|(_, module)| modules.contains(module))
            .collect();
        let mut edges = BTreeMap::new();
        while let Some((module, file)) = files.pop() {
            let source = Source::read(src, &file);
            let at = |line: usize| {
                format!(
                    "{}:{line}",
                    file.strip_prefix(src).unwrap_or(&file).display()
                )
            };
            source.walk(&module, &mut |item| {
                let (path, line) = match item {
                    Item::Module { name, file } => {
                        if let Some(file) = file {
                            let mut child = module.clone();
                            child.push(name);
                            files.push((child, file));
                        }
                        return;
                    }
                    Item::Use { path, line, .. } | Item::Path { path, line } => (path, line),
                };
                let Some(first) = path.first() else { return };
                let target = if modules.contains(first) {
                    first.clone()
                } else if let Some(module) = exports.get(first) {
                    module.clone()
                } else {
                    panic!(
                        "{}: `crate::{first}` is neither a module nor a re-export of lib.rs; \
                         teach tests/module_graph.rs how to resolve it",
                        at(line)
                    )
                };
                if target != module[0] {
                    edges.entry((module[0].clone(), target)).or_insert(at(line));
                }
            });
        }
        Graph { modules, edges }
    }

    /// One line per cycle (a shortest one through each strongly connected group of modules).
    fn cycles(&self) -> Vec<String> {
        let mut done = BTreeSet::new();
        let mut cycles = Vec::new();
        for start in &self.modules {
            if done.contains(start) {
                continue;
            }
            let Some(cycle) = self.shortest_path(start, start) else {
                continue;
            };
            let group = self.group_of(start);
            let mut line = start.clone();
            for pair in cycle.windows(2) {
                let at = &self.edges[&(pair[0].clone(), pair[1].clone())];
                line.push_str(&format!(" -> {} ({at})", pair[1]));
            }
            line.push_str(&format!(
                "   [modules in this knot: {}]",
                group.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
            done.extend(group);
            cycles.push(line);
        }
        cycles
    }

    fn targets<'a>(&'a self, from: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.edges
            .keys()
            .filter(move |(a, _)| a == from)
            .map(|(_, b)| b)
    }

    /// The modules `from` reaches and that reach it.
    fn group_of(&self, from: &str) -> BTreeSet<String> {
        self.modules
            .iter()
            .filter(|m| {
                *m == from
                    || (self.shortest_path(from, m).is_some()
                        && self.shortest_path(m, from).is_some())
            })
            .cloned()
            .collect()
    }

    /// The shortest chain of at least one edge from `from` to `to`, both ends included.
    fn shortest_path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut previous: BTreeMap<String, String> = BTreeMap::new();
        let mut queue: VecDeque<String> = VecDeque::from([from.to_owned()]);
        while let Some(at) = queue.pop_front() {
            for next in self.targets(&at) {
                if next == to {
                    let mut path = vec![to.to_owned(), at.clone()];
                    let mut cursor = at.clone();
                    while cursor != from {
                        cursor = previous[&cursor].clone();
                        path.push(cursor.clone());
                    }
                    path.reverse();
                    return Some(path);
                }
                if next != from && !previous.contains_key(next) {
                    previous.insert(next.clone(), at.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        None
    }

    /// The modules bottom-up, each with the modules it uses: each line holds those whose
    /// references all point to earlier lines (modules in or above a cycle are listed last).
    fn layers(&self) -> String {
        let mut placed: BTreeSet<String> = BTreeSet::new();
        let mut lines = Vec::new();
        loop {
            let layer: Vec<&String> = self
                .modules
                .iter()
                .filter(|m| !placed.contains(*m) && self.targets(m).all(|t| placed.contains(t)))
                .collect();
            if layer.is_empty() {
                break;
            }
            let described: Vec<String> = layer
                .iter()
                .map(|m| {
                    let uses: Vec<&str> = self.targets(m).map(String::as_str).collect();
                    format!("{m} [{}]", uses.join(" "))
                })
                .collect();
            lines.push(format!("{}: {}", lines.len(), described.join(", ")));
            placed.extend(layer.into_iter().cloned());
        }
        let rest: Vec<String> = self
            .modules
            .iter()
            .filter(|m| !placed.contains(*m))
            .map(|m| {
                let uses: Vec<&str> = self.targets(m).map(String::as_str).collect();
                format!("{m} [{}]", uses.join(" "))
            })
            .collect();
        if !rest.is_empty() {
            lines.push(format!("in a cycle or above one: {}", rest.join(", ")));
        }
        lines.join("\n")
    }
}

/// What [`Source::walk`] reports.
enum Item {
    /// A module declared in the code walked (not under a test-only `cfg`): `file` for `mod x;`.
    Module { name: String, file: Option<PathBuf> },
    /// A `use` leaf reaching the crate root: the path below the root, and the name it binds.
    Use {
        path: Vec<String>,
        bound: Option<String>,
        line: usize,
    },
    /// Any other path reaching the crate root (`crate::x::f()`), below the root.
    Path { path: Vec<String>, line: usize },
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
    /// A string literal's contents; other literals and lifetimes are `Other`.
    Str(String),
    Other,
}

struct Source {
    /// Where the children of this file's module live (`src/`, `src/index/`).
    dir: PathBuf,
    tokens: Vec<(Token, usize)>,
}

impl Source {
    fn read(src: &Path, file: &Path) -> Source {
        let text = fs::read_to_string(file)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
        let stem = file.file_stem().unwrap().to_str().unwrap();
        let dir = if stem == "lib" || stem == "mod" {
            file.parent().unwrap().to_owned()
        } else {
            file.with_extension("")
        };
        debug_assert!(dir.starts_with(src));
        Source {
            dir,
            tokens: tokenize(&text),
        }
    }

    fn token(&self, at: usize) -> Option<&Token> {
        self.tokens.get(at).map(|(token, _)| token)
    }

    fn ident(&self, at: usize) -> Option<&str> {
        match self.token(at) {
            Some(Token::Ident(name)) => Some(name),
            _ => None,
        }
    }

    /// Walks the file as module `module` (empty for the crate root), reporting its module
    /// declarations, and every path reaching the crate root.
    fn walk(&self, module: &[String], report: &mut dyn FnMut(Item)) {
        // Inline modules open at a brace depth: (depth, name).
        let mut inline: Vec<(usize, String)> = Vec::new();
        let mut depth = 0;
        let mut at = 0;
        while at < self.tokens.len() {
            let line = self.tokens[at].1;
            let current: Vec<String> = module
                .iter()
                .cloned()
                .chain(inline.iter().map(|(_, name)| name.clone()))
                .collect();
            match &self.tokens[at].0 {
                Token::Punct('#') => {
                    let (end, test_only) = self.attribute(at);
                    at = if test_only { self.skip_item(end) } else { end };
                    continue;
                }
                Token::Punct('{') => depth += 1,
                Token::Punct('}') => {
                    if inline.last().is_some_and(|(open, _)| *open == depth) {
                        inline.pop();
                    }
                    depth -= 1;
                }
                Token::Ident(word) if word == "mod" => {
                    if let Some(name) = self.ident(at + 1) {
                        match self.token(at + 2) {
                            Some(Token::Punct(';')) => {
                                let dir = inline
                                    .iter()
                                    .fold(self.dir.clone(), |dir, (_, name)| dir.join(name));
                                let flat = dir.join(format!("{name}.rs"));
                                let file = if flat.exists() {
                                    flat
                                } else {
                                    dir.join(name).join("mod.rs")
                                };
                                report(Item::Module {
                                    name: name.to_owned(),
                                    file: Some(file),
                                });
                            }
                            Some(Token::Punct('{')) => {
                                report(Item::Module {
                                    name: name.to_owned(),
                                    file: None,
                                });
                                depth += 1;
                                inline.push((depth, name.to_owned()));
                                at += 3;
                                continue;
                            }
                            _ => {}
                        }
                    }
                }
                Token::Ident(word) if word == "use" => {
                    let mut leaves = Vec::new();
                    at = self.use_tree(at + 1, Vec::new(), &mut leaves);
                    for (path, bound) in leaves {
                        if let Some(path) = resolve(&current, &path) {
                            report(Item::Use { path, bound, line });
                        }
                    }
                    continue;
                }
                Token::Ident(word)
                    if (word == "crate" || word == "super" || word == "self")
                        && self.token(at + 1) == Some(&Token::PathSep)
                        && !(at > 0 && self.token(at - 1) == Some(&Token::PathSep)) =>
                {
                    let mut path = vec![word.clone()];
                    let mut next = at + 2;
                    while let Some(name) = self.ident(next) {
                        path.push(name.to_owned());
                        if self.token(next + 1) != Some(&Token::PathSep) {
                            break;
                        }
                        next += 2;
                    }
                    if let Some(path) = resolve(&current, &path) {
                        report(Item::Path { path, line });
                    }
                    at = next;
                    continue;
                }
                _ => {}
            }
            at += 1;
        }
    }

    /// Reads the attribute starting at `at` (`#`); returns the position after it and whether
    /// it makes the next item test-only.
    fn attribute(&self, at: usize) -> (usize, bool) {
        let mut start = at + 1;
        if self.token(start) == Some(&Token::Punct('!')) {
            start += 1;
        }
        if self.token(start) != Some(&Token::Punct('[')) {
            return (at + 1, false);
        }
        let end = self.closing(start);
        let inner = &self.tokens[start + 1..end - 1];
        let test_only = matches!(inner.first(), Some((Token::Ident(word), _)) if word == "cfg")
            && cfg_enabled(&inner[1..]) == Some(false);
        (end, test_only)
    }

    /// The position after the bracket group opening at `at`.
    fn closing(&self, at: usize) -> usize {
        let mut depth = 0;
        for (offset, (token, _)) in self.tokens[at..].iter().enumerate() {
            match token {
                Token::Punct('(' | '[' | '{') => depth += 1,
                Token::Punct(')' | ']' | '}') => {
                    depth -= 1;
                    if depth == 0 {
                        return at + offset + 1;
                    }
                }
                _ => {}
            }
        }
        self.tokens.len()
    }

    /// The position after the item starting at `at` (with its attributes): after its `;`, or
    /// after its body's closing brace.
    fn skip_item(&self, mut at: usize) -> usize {
        while at < self.tokens.len() {
            match self.token(at) {
                Some(Token::Punct('#')) => at = self.attribute(at).0,
                Some(Token::Punct(';' | ',')) => return at + 1,
                // The end of the enclosing body (a test-only field or last expression).
                Some(Token::Punct('}')) => return at,
                Some(Token::Punct('{')) => {
                    let end = self.closing(at);
                    // `use a::{b, c};`
                    return if self.token(end) == Some(&Token::Punct(';')) {
                        end + 1
                    } else {
                        end
                    };
                }
                Some(Token::Punct('(' | '[')) => at = self.closing(at),
                _ => at += 1,
            }
        }
        at
    }

    /// Collects the leaves of the use tree at `at` below `prefix`: (path, bound name);
    /// returns the position after it (after the `;` for a whole `use` item).
    fn use_tree(
        &self,
        mut at: usize,
        mut prefix: Vec<String>,
        leaves: &mut Vec<(Vec<String>, Option<String>)>,
    ) -> usize {
        loop {
            match self.token(at) {
                Some(Token::Ident(name)) => {
                    prefix.push(name.clone());
                    at += 1;
                }
                Some(Token::Punct('$')) => at += 1,
                Some(Token::PathSep) => at += 1,
                Some(Token::Punct('*')) => {
                    leaves.push((prefix, None));
                    return self.after_use_leaf(at + 1);
                }
                Some(Token::Punct('{')) => {
                    at += 1;
                    loop {
                        match self.token(at) {
                            Some(Token::Punct('}')) => return self.after_use_leaf(at + 1),
                            Some(Token::Punct(',')) => at += 1,
                            None => return at,
                            _ => at = self.use_tree(at, prefix.clone(), leaves),
                        }
                    }
                }
                _ => {
                    // The end of a leaf: `as name`, `,`, `}` or `;`.
                    let mut bound = prefix.last().cloned();
                    if self.ident(at) == Some("as") {
                        bound = self.ident(at + 1).map(str::to_owned);
                        at += 2;
                    }
                    if bound.as_deref() == Some("self") {
                        bound = prefix.iter().rev().nth(1).cloned();
                    }
                    leaves.push((prefix, bound));
                    return self.after_use_leaf(at);
                }
            }
        }
    }

    /// Steps over the `;` ending a `use` item; a `,` or `}` belongs to the enclosing group.
    fn after_use_leaf(&self, at: usize) -> usize {
        if self.token(at) == Some(&Token::Punct(';')) {
            at + 1
        } else {
            at
        }
    }
}

/// The path below the crate root that `path`, written in module `current`, names; `None`
/// for a path that does not start at the root or inside this crate (`std::…`, a local name)
/// or that stays in the crate root itself (`crate::{self}`). In the root itself every `use`
/// path is taken as starting at the root (`std::…` too; the caller keeps only modules).
fn resolve(current: &[String], path: &[String]) -> Option<Vec<String>> {
    let (mut base, mut rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self" | "super") => (current.to_vec(), path),
        // In the crate root, `use x::…` starts at the root.
        Some(_) if current.is_empty() => (Vec::new(), path),
        _ => return None,
    };
    while let Some(first) = rest.first() {
        match first.as_str() {
            "self" => {}
            "super" => {
                base.pop();
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    (!base.is_empty()).then_some(base)
}

/// Whether the `cfg(…)` predicate in `tokens` (starting at its `(`) holds in a normal build:
/// `test` and `feature = "fuzzing"` are off; `None` for anything it depends on otherwise.
fn cfg_enabled(tokens: &[(Token, usize)]) -> Option<bool> {
    fn predicate(tokens: &[(Token, usize)], at: &mut usize) -> Option<bool> {
        let token = |at: usize| tokens.get(at).map(|(token, _)| token);
        let Some(Token::Ident(word)) = token(*at) else {
            return None;
        };
        *at += 1;
        match (word.as_str(), token(*at)) {
            ("all" | "any" | "not", Some(Token::Punct('('))) => {
                *at += 1;
                let mut values = Vec::new();
                while let Some(token) = token(*at) {
                    match token {
                        Token::Punct(')') => {
                            *at += 1;
                            break;
                        }
                        Token::Punct(',') => *at += 1,
                        _ => values.push(predicate(tokens, at)),
                    }
                }
                match word.as_str() {
                    "not" => values.first().copied().flatten().map(|v| !v),
                    "all" if values.contains(&Some(false)) => Some(false),
                    "all" if values.iter().all(|v| *v == Some(true)) => Some(true),
                    "any" if values.contains(&Some(true)) => Some(true),
                    "any" if values.iter().all(|v| *v == Some(false)) => Some(false),
                    _ => None,
                }
            }
            (_, Some(Token::Punct('='))) => {
                *at += 1;
                let value = match token(*at) {
                    Some(Token::Str(value)) => value.clone(),
                    _ => return None,
                };
                *at += 1;
                (word == "feature" && value == "fuzzing").then_some(false)
            }
            ("test", _) => Some(false),
            _ => None,
        }
    }
    if tokens.first().map(|(token, _)| token) != Some(&Token::Punct('(')) {
        return None;
    }
    predicate(tokens, &mut 1)
}

/// Rust tokens, enough to find paths: comments dropped, literals and lifetimes opaque.
fn tokenize(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut at = 0;
    let count_lines =
        |from: usize, to: usize| chars[from..to].iter().filter(|c| **c == '\n').count();
    while at < chars.len() {
        let c = chars[at];
        let next = chars.get(at + 1).copied();
        let start = at;
        let token = if c == '\n' {
            line += 1;
            at += 1;
            continue;
        } else if c.is_whitespace() {
            at += 1;
            continue;
        } else if c == '/' && next == Some('/') {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
            continue;
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while at < chars.len() {
                if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
                    depth += 1;
                    at += 2;
                } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
                    depth -= 1;
                    at += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    at += 1;
                }
            }
            line += count_lines(start, at);
            continue;
        } else if let Some(end) = raw_string_end(&chars, at) {
            at = end;
            Token::Str(String::new())
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            at += if c == 'b' { 2 } else { 1 };
            let from = at;
            while at < chars.len() && chars[at] != '"' {
                at += if chars[at] == '\\' { 2 } else { 1 };
            }
            let value: String = chars[from..at.min(chars.len())].iter().collect();
            at += 1;
            Token::Str(value)
        } else if c == '\'' || (c == 'b' && next == Some('\'')) {
            let quote = if c == 'b' { at + 1 } else { at };
            if chars.get(quote + 1) == Some(&'\\') {
                // An escaped char literal: `'\''`, `'\n'`, `'\u{1F600}'`.
                at = quote + 3;
                while at < chars.len() && chars[at] != '\'' {
                    at += 1;
                }
                at += 1;
            } else if chars.get(quote + 2) == Some(&'\'') {
                at = quote + 3;
            } else {
                // A lifetime or label.
                at = quote + 1;
                while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                    at += 1;
                }
            }
            Token::Other
        } else if c.is_alphabetic() || c == '_' {
            while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                at += 1;
            }
            Token::Ident(chars[start..at].iter().collect())
        } else if c.is_ascii_digit() {
            while at < chars.len()
                && (chars[at].is_alphanumeric()
                    || chars[at] == '_'
                    || (chars[at] == '.' && chars.get(at + 1).is_some_and(char::is_ascii_digit)))
            {
                at += 1;
            }
            Token::Other
        } else if c == ':' && next == Some(':') {
            at += 2;
            Token::PathSep
        } else {
            at += 1;
            Token::Punct(c)
        };
        tokens.push((token, line));
        line += count_lines(start, at);
    }
    tokens
}

/// The end of the raw string literal (`r"…"`, `r#"…"#`, `br"…"`) starting at `at`, if one does.
fn raw_string_end(chars: &[char], at: usize) -> Option<usize> {
    let mut pos = at;
    if chars.get(pos) == Some(&'b') {
        pos += 1;
    }
    if chars.get(pos) != Some(&'r') {
        return None;
    }
    pos += 1;
    let hashes = chars[pos..].iter().take_while(|c| **c == '#').count();
    pos += hashes;
    if chars.get(pos) != Some(&'"') {
        return None;
    }
    // An identifier such as `br` or `r` directly before a `"` is not possible in Rust.
    if at > 0 && (chars[at - 1].is_alphanumeric() || chars[at - 1] == '_') {
        return None;
    }
    pos += 1;
    while pos < chars.len() {
        if chars[pos] == '"' && chars[pos + 1..].iter().take(hashes).all(|c| *c == '#') {
            let end = pos + 1 + hashes;
            if end <= chars.len() {
                return Some(end);
            }
        }
        pos += 1;
    }
    Some(chars.len())
}

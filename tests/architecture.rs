//! The rules ARCHITECTURE.md states about the code's shape, checked by
//! reading `src/` as Rust tokens (so comments and strings never count):
//!
//! - every log line and metric update goes through `ops::internal_events`,
//!   and only the CLI prints to the terminal;
//! - no import cycle between the top-level modules, nor between the
//!   submodules of one module; only the CLI depends on the simulator;
//! - `model/` and `encode/` do no I/O, no async and read no clock;
//! - `upstream/live.rs` parses no payloads; only `cli/` uses `anyhow`;
//! - `src/main.rs` holds the allocator and a call to `cli::main`, nothing else.
//!
//! `#[cfg(test)]` code is tests and is not held to these rules.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

// ---- reading src/ -------------------------------------------------------

/// Something found in a source file.
#[derive(Debug, Clone)]
enum Found {
    /// A path of two or more segments (`crate::relay::Outgoing`), or one
    /// named in a `use` tree.
    Path { segments: Vec<String>, in_use: bool },
    /// A macro invocation, by its path (`tracing::info`, `println`).
    Macro { segments: Vec<String> },
    /// `.a.b.c(..).d(..)`: the names after the first dot, in order.
    FieldChain { names: Vec<String> },
    /// `async` or `await`.
    Keyword(String),
}

#[derive(Debug, Clone)]
struct Occurrence {
    /// Relative to the crate root, `src/relay/backfill.rs`.
    file: String,
    line: usize,
    /// The module the occurrence is in (inline modules included).
    module: Vec<String>,
    found: Found,
}

struct SourceFile {
    /// `["relay", "backfill"]` for `src/relay/backfill.rs`, `[]` for `lib.rs`.
    module: Vec<String>,
    occurrences: Vec<Occurrence>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

fn tokens_of(path: &Path) -> TokenStream {
    let text = std::fs::read_to_string(path).unwrap();
    text.parse()
        .unwrap_or_else(|e| panic!("{}: not valid Rust tokens: {e:?}", path.display()))
}

/// Every library source file (not `main.rs`), read.
fn library() -> Vec<SourceFile> {
    let src = root().join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter(|p| !p.ends_with("main.rs"))
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let module = module_of(relative);
            let file = format!("src/{}", relative.display());
            let mut occurrences = Vec::new();
            let walker = Walker {
                file: &file,
                module: module.clone(),
            };
            walker.walk(tokens_of(&path), &mut occurrences);
            SourceFile {
                module,
                occurrences,
            }
        })
        .collect()
}

struct Walker<'a> {
    file: &'a str,
    module: Vec<String>,
}

fn is_punct(t: Option<&TokenTree>, c: char) -> bool {
    matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

fn ident(t: Option<&TokenTree>) -> Option<String> {
    match t {
        Some(TokenTree::Ident(i)) => Some(i.to_string()),
        _ => None,
    }
}

/// Is `tokens[i..]` a `::`?
fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && is_punct(tokens.get(i + 1), ':')
}

fn compact(t: &TokenTree) -> String {
    t.to_string().split_whitespace().collect()
}

impl Walker<'_> {
    fn at(&self, t: &TokenTree, found: Found) -> Occurrence {
        Occurrence {
            file: self.file.to_string(),
            line: t.span().start().line,
            module: self.module.clone(),
            found,
        }
    }

    /// Walks one token level; `#[cfg(test)]` items are skipped.
    fn walk(&self, stream: TokenStream, out: &mut Vec<Occurrence>) {
        let tokens: Vec<TokenTree> = stream.into_iter().collect();
        let mut test_item = false;
        let mut i = 0;
        while i < tokens.len() {
            let t = &tokens[i];
            // Attributes: `#[cfg(test)]` marks the item that follows.
            if is_punct(Some(t), '#') {
                let group = if is_punct(tokens.get(i + 1), '!') {
                    i + 2
                } else {
                    i + 1
                };
                if let Some(TokenTree::Group(g)) = tokens.get(group) {
                    if g.delimiter() == Delimiter::Bracket {
                        if compact(&tokens[group]) == "[cfg(test)]" {
                            test_item = true;
                        } else if !test_item {
                            self.walk(g.stream(), out);
                        }
                        i = group + 1;
                        continue;
                    }
                }
            }
            if test_item {
                // Skip the item: up to its `;` or its body.
                match t {
                    TokenTree::Punct(p) if p.as_char() == ';' => test_item = false,
                    TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => test_item = false,
                    _ => {}
                }
                i += 1;
                continue;
            }
            i = self.step(&tokens, i, out);
        }
    }

    /// Reads what starts at `tokens[i]`; returns where to go on.
    fn step(&self, tokens: &[TokenTree], i: usize, out: &mut Vec<Occurrence>) -> usize {
        let t = &tokens[i];
        match t {
            TokenTree::Group(g) => {
                self.walk(g.stream(), out);
                i + 1
            }
            TokenTree::Ident(id) if id == "mod" => {
                if let (Some(name), Some(TokenTree::Group(body))) =
                    (ident(tokens.get(i + 1)), tokens.get(i + 2))
                {
                    let mut module = self.module.clone();
                    module.push(name);
                    let inner = Walker {
                        file: self.file,
                        module,
                    };
                    inner.walk(body.stream(), out);
                    return i + 3;
                }
                i + 1
            }
            TokenTree::Ident(id) if id == "use" => {
                let end = (i..tokens.len())
                    .find(|&j| is_punct(tokens.get(j), ';'))
                    .unwrap_or(tokens.len());
                for segments in use_paths(&tokens[i + 1..end]) {
                    out.push(self.at(
                        t,
                        Found::Path {
                            segments,
                            in_use: true,
                        },
                    ));
                }
                end + 1
            }
            TokenTree::Ident(id) if id == "async" || id == "await" => {
                out.push(self.at(t, Found::Keyword(id.to_string())));
                i + 1
            }
            TokenTree::Ident(_) if i > 0 && is_punct(tokens.get(i - 1), '.') => {
                self.field_chain(tokens, i, out)
            }
            TokenTree::Ident(_) => self.path(tokens, i, out),
            _ => i + 1,
        }
    }

    /// A path starting at `tokens[i]`, and whether it names a macro.
    fn path(&self, tokens: &[TokenTree], i: usize, out: &mut Vec<Occurrence>) -> usize {
        let mut segments = vec![tokens[i].to_string()];
        let mut j = i + 1;
        while is_path_sep(tokens, j) {
            match ident(tokens.get(j + 2)) {
                Some(s) => segments.push(s),
                None => break,
            }
            j += 3;
        }
        let bang = matches!(tokens.get(j), Some(TokenTree::Punct(p)) if p.as_char() == '!' && p.spacing() == Spacing::Alone);
        if bang && matches!(tokens.get(j + 1), Some(TokenTree::Group(_))) {
            out.push(self.at(&tokens[i], Found::Macro { segments }));
            return j + 1;
        }
        if segments.len() > 1 {
            out.push(self.at(
                &tokens[i],
                Found::Path {
                    segments,
                    in_use: false,
                },
            ));
        }
        j.max(i + 1)
    }

    /// `.field.field.method(..).method(..)`: the names, in order.
    fn field_chain(&self, tokens: &[TokenTree], i: usize, out: &mut Vec<Occurrence>) -> usize {
        let is_call = |j: usize| matches!(tokens.get(j), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis);
        if is_call(i + 1) || is_path_sep(tokens, i + 1) {
            return i + 1; // a method, not a field
        }
        let mut methods = vec![tokens[i].to_string()];
        let mut j = i + 1;
        while is_punct(tokens.get(j), '.') {
            let Some(name) = ident(tokens.get(j + 1)) else {
                break;
            };
            methods.push(name);
            j += 2;
            // Turbofish: `::<...>`.
            if is_path_sep(tokens, j) && is_punct(tokens.get(j + 2), '<') {
                let close = (j + 3..tokens.len()).find(|&k| is_punct(tokens.get(k), '>'));
                j = close.map_or(j, |k| k + 1);
            }
            if is_call(j) {
                if let Some(TokenTree::Group(g)) = tokens.get(j) {
                    self.walk(g.stream(), out);
                }
                j += 1;
            }
            while is_punct(tokens.get(j), '?') {
                j += 1;
            }
        }
        out.push(self.at(&tokens[i], Found::FieldChain { names: methods }));
        j
    }
}

/// The full paths a `use` tree names (`a::{b, c::d}` → `a::b`, `a::c::d`);
/// `self` names the prefix, `*` and aliases are dropped.
fn use_paths(tokens: &[TokenTree]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    expand_use(tokens, &mut Vec::new(), &mut out);
    out
}

fn expand_use(tokens: &[TokenTree], prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let depth = prefix.len();
    let mut i = 0;
    let mut named = false;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Ident(id) if id == "as" => i += 2,
            TokenTree::Ident(id) if id == "self" && i + 1 == tokens.len() => {
                named = true;
                i += 1
            }
            TokenTree::Ident(id) => {
                prefix.push(id.to_string());
                named = i + 1 == tokens.len() || !is_path_sep(tokens, i + 1);
                i += 1;
            }
            TokenTree::Group(g) => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                for branch in inner.split(|t| is_punct(Some(t), ',')) {
                    if !branch.is_empty() {
                        expand_use(branch, &mut prefix.clone(), out);
                    }
                }
                prefix.truncate(depth);
                return;
            }
            _ => i += 1,
        }
    }
    if named && !prefix.is_empty() {
        out.push(prefix.clone());
    }
}

// ---- the module tree ----------------------------------------------------

struct Tree {
    /// Top-level module → its submodules (files).
    children: BTreeMap<String, BTreeSet<String>>,
    /// `(module, name)` → what `pub use` in that module's file names.
    reexports: HashMap<(String, String), Vec<String>>,
}

impl Tree {
    fn new(files: &[SourceFile]) -> Tree {
        let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in files {
            match f.module.as_slice() {
                [top] => {
                    children.entry(top.clone()).or_default();
                }
                [top, child, ..] => {
                    children
                        .entry(top.clone())
                        .or_default()
                        .insert(child.clone());
                }
                [] => {}
            }
        }
        let mut tree = Tree {
            children,
            reexports: HashMap::new(),
        };
        for f in files.iter().filter(|f| f.module.len() == 1) {
            for o in f.occurrences.iter().filter(|o| o.module == f.module) {
                if let Found::Path {
                    segments,
                    in_use: true,
                } = &o.found
                {
                    if let Some(target) = tree.resolve(&o.module, segments) {
                        let name = segments.last().unwrap().clone();
                        tree.reexports.insert((f.module[0].clone(), name), target);
                    }
                }
            }
        }
        tree
    }

    fn is_top(&self, name: &str) -> bool {
        self.children.contains_key(name)
    }

    /// The crate-absolute path `segments` names in `module`, if it is in
    /// this crate.
    fn resolve(&self, module: &[String], segments: &[String]) -> Option<Vec<String>> {
        let (base, rest): (Vec<String>, &[String]) = match segments[0].as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (module.to_vec(), &segments[1..]),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let keep = module.len().checked_sub(ups)?;
                (module[..keep].to_vec(), &segments[ups..])
            }
            first => match module {
                [] if self.is_top(first) => (Vec::new(), segments),
                [top] if self.children[top].contains(first) => (module.to_vec(), segments),
                _ => return None,
            },
        };
        let mut abs = base;
        abs.extend(rest.iter().cloned());
        (!abs.is_empty()).then_some(abs)
    }

    /// The submodule of `top` an absolute path lands in, through `pub use`.
    fn submodule(&self, abs: &[String]) -> Option<String> {
        let (top, name) = (abs.first()?, abs.get(1)?);
        if self.children.get(top)?.contains(name) {
            return Some(name.clone());
        }
        let target = self.reexports.get(&(top.clone(), name.clone()))?;
        (target.len() > 2 && target[0] == *top && self.children[top].contains(&target[1]))
            .then(|| target[1].clone())
    }
}

/// `from → to`, with the first place that makes it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn add_edge(graph: &mut Graph, from: &str, to: &str, evidence: String) {
    graph
        .entry(from.to_string())
        .or_default()
        .entry(to.to_string())
        .or_insert(evidence);
}

fn evidence(o: &Occurrence, segments: &[String]) -> String {
    format!("{}:{} `{}`", o.file, o.line, segments.join("::"))
}

/// The top-level graph and, per top-level module, its submodules' graph.
fn dependency_graphs(files: &[SourceFile], tree: &Tree) -> (Graph, BTreeMap<String, Graph>) {
    let mut top = Graph::new();
    let mut inner: BTreeMap<String, Graph> = BTreeMap::new();
    for o in files.iter().flat_map(|f| &f.occurrences) {
        let (Found::Path { segments, .. } | Found::Macro { segments }) = &o.found else {
            continue;
        };
        let Some(from) = o.module.first() else {
            continue;
        };
        let Some(abs) = tree.resolve(&o.module, segments) else {
            continue;
        };
        if abs[0] != *from && tree.is_top(&abs[0]) {
            add_edge(&mut top, from, &abs[0], evidence(o, segments));
        }
        let from_child = o.module.get(1).filter(|c| tree.children[from].contains(*c));
        if let (true, Some(from_child)) = (abs[0] == *from, from_child) {
            if let Some(to_child) = tree.submodule(&abs).filter(|c| c != from_child) {
                let graph = inner.entry(from.clone()).or_default();
                add_edge(graph, from_child, &to_child, evidence(o, segments));
            }
        }
    }
    (top, inner)
}

/// The shortest cycle through each node that has one, each reported once.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in graph.keys() {
        let mut back: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue: VecDeque<&str> = VecDeque::from([start.as_str()]);
        let mut end = None;
        while let Some(n) = queue.pop_front() {
            for next in graph.get(n).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    end = Some(n);
                    break;
                }
                if !back.contains_key(next.as_str()) {
                    back.insert(next, n);
                    queue.push_back(next);
                }
            }
            if end.is_some() {
                break;
            }
        }
        let Some(mut n) = end else { continue };
        let mut cycle = vec![n.to_string()];
        while n != start {
            n = back[n];
            cycle.push(n.to_string());
        }
        cycle.reverse();
        // One rotation per cycle: start at its smallest name.
        let min = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap();
        cycle.rotate_left(min);
        found.insert(cycle);
    }
    found.into_iter().collect()
}

fn describe_cycle(graph: &Graph, cycle: &[String], out: &mut String) {
    let mut path = cycle.to_vec();
    path.push(cycle[0].clone());
    let _ = writeln!(out, "  {}", path.join(" -> "));
    for w in path.windows(2) {
        let _ = writeln!(out, "      {} -> {}: {}", w[0], w[1], graph[&w[0]][&w[1]]);
    }
}

// ---- the rules ----------------------------------------------------------

/// Where logging is allowed: the typed events, and the simulator (a
/// stand-alone fake of the upstream, not part of the relay).
fn may_log(file: &str) -> bool {
    file == "src/ops/internal_events.rs" || file.starts_with("src/simulator/")
}

/// Where metrics may be touched: `ops/` defines, renders and updates them.
fn may_update_metrics(file: &str) -> bool {
    file.starts_with("src/ops/")
}

/// Where printing to the terminal is allowed: the CLI's output for the user.
fn may_print(file: &str) -> bool {
    file.starts_with("src/cli/") || file.starts_with("src/simulator/")
}

const LOG_MACROS: &[&str] = &[
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "event",
    "span",
    "trace_span",
    "debug_span",
    "info_span",
    "warn_span",
    "error_span",
];
const PRINT_MACROS: &[&str] = &["print", "println", "eprint", "eprintln", "dbg"];
/// Methods that change a Prometheus metric; `with_label_values` at the end
/// of a chain hands out a child to change later.
const METRIC_UPDATES: &[&str] = &[
    "inc",
    "inc_by",
    "dec",
    "dec_by",
    "set",
    "add",
    "sub",
    "observe",
    "start_timer",
    "observe_closure_duration",
    "reset",
    "remove_label_values",
];

/// The fields of `Metrics` (and its nested groups), read from `ops/metrics.rs`.
fn metric_fields() -> BTreeSet<String> {
    let tokens: Vec<TokenTree> = tokens_of(&root().join("src/ops/metrics.rs"))
        .into_iter()
        .collect();
    let mut fields = BTreeSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let is_struct = matches!(t, TokenTree::Ident(id) if id == "struct");
        let Some(TokenTree::Group(body)) = tokens.get(i + 2) else {
            continue;
        };
        if !is_struct || body.delimiter() != Delimiter::Brace {
            continue;
        }
        let body: Vec<TokenTree> = body.stream().into_iter().collect();
        for (j, b) in body.iter().enumerate() {
            let colon = is_punct(body.get(j + 1), ':') && !is_path_sep(&body, j + 1);
            if matches!(b, TokenTree::Ident(_))
                && colon
                && j > 0
                && ident(body.get(j - 1)).as_deref() == Some("pub")
            {
                fields.insert(b.to_string());
            }
        }
    }
    assert!(fields.len() > 20, "Metrics fields not found: {fields:?}");
    fields
}

fn log_rule_violations(files: &[SourceFile]) -> Vec<String> {
    let fields = metric_fields();
    let mut out = Vec::new();
    for o in files.iter().flat_map(|f| &f.occurrences) {
        let at = format!("{}:{}", o.file, o.line);
        match &o.found {
            Found::Path { segments, .. }
                if !may_log(&o.file) && matches!(segments[0].as_str(), "tracing" | "log") =>
            {
                out.push(format!(
                    "{at}: `{}`: logging outside ops::internal_events",
                    segments.join("::")
                ));
            }
            Found::Macro { segments } => {
                let name = segments.last().unwrap().as_str();
                let bare = segments.len() == 1;
                let via_logger = matches!(segments[0].as_str(), "tracing" | "log");
                let shown = segments.join("::");
                if (via_logger || (bare && LOG_MACROS.contains(&name))) && !may_log(&o.file) {
                    out.push(format!(
                        "{at}: `{shown}!`: logging outside ops::internal_events"
                    ));
                } else if bare && PRINT_MACROS.contains(&name) && !may_print(&o.file) {
                    out.push(format!(
                        "{at}: `{shown}!`: printing to the terminal outside cli/"
                    ));
                }
            }
            Found::Path { segments, .. }
                if !may_update_metrics(&o.file) && segments[0] == "prometheus" =>
            {
                out.push(format!(
                    "{at}: `{}`: Prometheus outside ops/",
                    segments.join("::")
                ));
            }
            Found::FieldChain { names } if !may_update_metrics(&o.file) => {
                // From the first `Metrics` field on: what is done to it.
                let Some(k) = names.iter().position(|n| fields.contains(n)) else {
                    continue;
                };
                let rest = &names[k + 1..];
                let updates = rest.iter().any(|m| METRIC_UPDATES.contains(&m.as_str()))
                    || rest.last().is_some_and(|m| m == "with_label_values");
                if updates {
                    out.push(format!(
                        "{at}: `.{}`: a metric update outside ops::internal_events",
                        names.join(".")
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_log_line_and_metric_update_goes_through_internal_events() {
    let violations = log_rule_violations(&library());
    assert!(
        violations.is_empty(),
        "{} log line(s), metric update(s) or print(s) bypass ops::internal_events \
         (add a typed event there and emit it; the simulator and the CLI's output are exempt):\n  {}",
        violations.len(),
        violations.join("\n  ")
    );
}

#[test]
fn the_log_rule_sees_what_it_forbids() {
    // The detection itself, on a snippet: it must not pass vacuously.
    let snippet = r#"
        fn f(m: &Metrics) {
            tracing::info!("x");
            warn!(a = 1, "y");
            m.queue_depth.set(3);
            self.metrics.spool_corrupt_records.with_label_values::<&str>(&[]).inc();
            let c = m.gaps.with_label_values(&["t", "s"]);
            let _ = m.spool_bytes.get();
            println!("z");
            // tracing::info!("in a comment");
            let s = "tracing::info!(\"in a string\")";
        }
        #[cfg(test)]
        mod tests { fn g() { tracing::info!("tests may"); } }
    "#;
    let mut occurrences = Vec::new();
    let walker = Walker {
        file: "src/relay/example.rs",
        module: vec!["relay".into(), "example".into()],
    };
    walker.walk(snippet.parse().unwrap(), &mut occurrences);
    let file = SourceFile {
        module: walker.module.clone(),
        occurrences,
    };
    let found = log_rule_violations(&[file]);
    let lines: Vec<usize> = found
        .iter()
        .map(|v| v.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 9], "{found:#?}");
}

#[test]
fn no_import_cycle_between_modules() {
    let files = library();
    let tree = Tree::new(&files);
    let (top, inner) = dependency_graphs(&files, &tree);
    let mut report = String::new();
    let top_cycles = cycles(&top);
    if !top_cycles.is_empty() {
        let _ = writeln!(report, "between top-level modules of src/:");
        for c in &top_cycles {
            describe_cycle(&top, c, &mut report);
        }
    }
    for (module, graph) in &inner {
        let found = cycles(graph);
        if !found.is_empty() {
            let _ = writeln!(report, "between the submodules of src/{module}/:");
            for c in &found {
                describe_cycle(graph, c, &mut report);
            }
        }
    }
    assert!(
        report.is_empty(),
        "import cycles (a module may only use modules that do not use it back):\n{report}"
    );
    // The graph is not empty: the check would see a cycle if there was one.
    assert!(top.len() >= 8, "{top:#?}");
}

#[test]
fn only_the_cli_depends_on_the_simulator() {
    let files = library();
    let tree = Tree::new(&files);
    let (top, _) = dependency_graphs(&files, &tree);
    let users: Vec<String> = top
        .iter()
        .filter(|(from, _)| *from != "cli")
        .filter_map(|(from, to)| Some(format!("{from}: {}", to.get("simulator")?)))
        .collect();
    assert!(
        users.is_empty(),
        "the simulator is used outside the CLI:\n  {}",
        users.join("\n  ")
    );
    // Not vacuous while the simulator is a module of this crate.
    if tree.is_top("simulator") {
        assert!(top["cli"].contains_key("simulator"), "the CLI runs it");
    }
}

#[test]
fn model_and_encode_do_no_io_no_async_and_read_no_clock() {
    const IO: &[&str] = &[
        "tokio",
        "tokio_util",
        "futures",
        "reqwest",
        "rdkafka",
        "async_nats",
        "axum",
    ];
    const STD_IO: &[&str] = &["fs", "net", "env", "process", "thread"];
    const CLOCKS: &[&str] = &["SystemTime", "Instant", "Utc", "Local"];
    let mut violations = Vec::new();
    let mut checked = 0;
    for f in library() {
        if !matches!(
            f.module.first().map(String::as_str),
            Some("model" | "encode")
        ) {
            continue;
        }
        checked += 1;
        for o in &f.occurrences {
            let at = format!("{}:{}", o.file, o.line);
            match &o.found {
                Found::Keyword(k) => violations.push(format!("{at}: `{k}`")),
                Found::Path { segments, .. } | Found::Macro { segments } => {
                    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
                    let io = IO.contains(&s[0])
                        || (s[0] == "std" && s.get(1).is_some_and(|m| STD_IO.contains(m)));
                    let clock = s
                        .windows(2)
                        .any(|w| CLOCKS.contains(&w[0]) && w[1] == "now");
                    if io || clock {
                        violations.push(format!("{at}: `{}`", segments.join("::")));
                    }
                }
                Found::FieldChain { .. } => {}
            }
        }
    }
    assert!(checked >= 5, "model/ and encode/ not found");
    assert!(
        violations.is_empty(),
        "model/ and encode/ are pure (time is passed in), but:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn main_rs_holds_only_the_allocator_and_the_call_to_cli_main() {
    let tokens: Vec<TokenTree> = tokens_of(&root().join("src/main.rs")).into_iter().collect();
    let mut items = Vec::new();
    let mut attributes = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if is_punct(tokens.get(i), '#') {
            let group = if is_punct(tokens.get(i + 1), '!') {
                i + 2
            } else {
                i + 1
            };
            attributes.push(compact(&tokens[group]));
            i = group + 1;
            continue;
        }
        if let Some(keyword) = ident(tokens.get(i)) {
            let items_keywords = [
                "fn",
                "static",
                "use",
                "mod",
                "struct",
                "enum",
                "impl",
                "const",
                "trait",
                "type",
                "macro_rules",
                "extern",
            ];
            if items_keywords.contains(&keyword.as_str()) {
                items.push(keyword);
            }
        }
        i += 1;
    }
    items.sort();
    assert_eq!(
        items,
        ["fn", "static"],
        "main.rs holds one static (the allocator) and `fn main`"
    );
    assert!(
        attributes.contains(&"[global_allocator]".to_string()),
        "{attributes:?}"
    );
    let main = tokens
        .iter()
        .position(|t| t.to_string() == "main")
        .expect("fn main");
    let body = tokens[main..]
        .iter()
        .find(|t| matches!(t, TokenTree::Group(g) if g.delimiter() == Delimiter::Brace))
        .expect("the body of main");
    assert_eq!(compact(body), "{studio_relay::cli::main()}");
}

/// Paths whose first segment is one of `roots`, in the files `select` picks.
fn uses_of(select: impl Fn(&str) -> bool, roots: &[&str]) -> Vec<String> {
    library()
        .iter()
        .flat_map(|f| &f.occurrences)
        .filter(|o| select(&o.file))
        .filter_map(|o| match &o.found {
            Found::Path { segments, .. } | Found::Macro { segments }
                if roots.contains(&segments[0].as_str()) =>
            {
                Some(format!("{}:{} `{}`", o.file, o.line, segments.join("::")))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_live_socket_parses_no_payloads() {
    let parsing = uses_of(
        |f| f == "src/upstream/live.rs",
        &["serde_json", "serde", "simd_json"],
    );
    assert!(
        parsing.is_empty(),
        "upstream::live hands frames on unparsed:\n  {}",
        parsing.join("\n  ")
    );
    assert!(!uses_of(|f| f == "src/upstream/live.rs", &["tokio_tungstenite"]).is_empty());
}

#[test]
fn only_the_cli_uses_anyhow() {
    let outside = uses_of(|f| !f.starts_with("src/cli/"), &["anyhow"]);
    assert!(
        outside.is_empty(),
        "library modules return thiserror enums:\n  {}",
        outside.join("\n  ")
    );
    assert!(!uses_of(|f| f.starts_with("src/cli/"), &["anyhow"]).is_empty());
}

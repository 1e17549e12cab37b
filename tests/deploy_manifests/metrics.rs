//! The metrics the alert rules, the Grafana dashboard and the operations
//! guide name, against the families the relay's own `Metrics` registers; their
//! PromQL parsed by promql-parser and the rule files checked by `promtool`.

use std::collections::{BTreeMap, BTreeSet};

use prometheus::proto::MetricType;
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use serde_json::Value;
use studio_relay::ops::Metrics;

use crate::docs::{anchors, OPERATIONS_GUIDE};
use crate::{all_objects, id, items, kind, read, run_tool, yaml_documents, Problems};

const ALERTS: &str = "deploy/prometheus/alerts.yaml";
const DASHBOARD: &str = "deploy/grafana/studio-relay.json";

/// Labels Prometheus adds to every series it scrapes through the ServiceMonitor.
const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "endpoint",
    "container",
];

/// The series the relay exports: name → (family, labels). A histogram `x`
/// exports `x_bucket` (with `le`), `x_sum` and `x_count`.
pub struct Exported {
    families: Vec<studio_relay::ops::FamilyDescriptor>,
    series: BTreeMap<String, (String, BTreeSet<String>)>,
}

impl Exported {
    pub fn from_the_registry() -> Exported {
        let families = Metrics::new().families().to_vec();
        let mut series = BTreeMap::new();
        for f in &families {
            let labels: BTreeSet<String> = f.labels.iter().cloned().collect();
            series.insert(f.name.clone(), (f.name.clone(), labels.clone()));
            if f.kind == MetricType::HISTOGRAM {
                let mut bucket = labels.clone();
                bucket.insert("le".into());
                series.insert(format!("{}_bucket", f.name), (f.name.clone(), bucket));
                series.insert(format!("{}_sum", f.name), (f.name.clone(), labels.clone()));
                series.insert(format!("{}_count", f.name), (f.name.clone(), labels));
            }
        }
        Exported { families, series }
    }

    /// Checks a PromQL expression: it parses, and every `studio_relay_*`
    /// series, label matcher and grouping label it uses exists.
    pub fn check_promql(&self, place: &str, expr: &str, problems: &mut Problems) {
        match parser::parse(expr) {
            Ok(ast) => {
                self.labels_of(place, &ast, problems);
            }
            Err(e) => problems.push(format!("{place}: PromQL does not parse: {e}: {expr}")),
        }
    }

    /// The labels an expression's result carries, where they are known (only
    /// `studio_relay_*` series are); records unknown series and labels.
    fn labels_of(
        &self,
        place: &str,
        e: &Expr,
        problems: &mut Problems,
    ) -> Option<BTreeSet<String>> {
        match e {
            Expr::VectorSelector(vs) => self.selector(place, vs, problems),
            Expr::MatrixSelector(ms) => self.selector(place, &ms.vs, problems),
            Expr::Aggregate(a) => {
                let inner = self.labels_of(place, &a.expr, problems);
                if let Some(p) = &a.param {
                    self.labels_of(place, p, problems);
                }
                let (by, grouping) = match &a.modifier {
                    Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                    Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                    None => (true, Vec::new()),
                };
                let inner = inner?;
                for label in grouping.iter().filter(|l| !inner.contains(*l)) {
                    problems.push(format!("{place}: groups by `{label}`, which the series it aggregates do not carry ({inner:?})"));
                }
                let grouping: BTreeSet<String> = grouping.into_iter().collect();
                Some(if by { grouping } else { &inner - &grouping })
            }
            Expr::Call(call) => {
                let args: Vec<_> = call
                    .args
                    .args
                    .iter()
                    .map(|a| self.labels_of(place, a, problems))
                    .collect();
                if matches!(
                    call.func.name,
                    "label_replace" | "label_join" | "absent" | "absent_over_time"
                ) {
                    return None;
                }
                args.into_iter()
                    .try_fold(BTreeSet::new(), |acc, l| Some(&acc | &l?))
            }
            Expr::Binary(b) => {
                let lhs = self.labels_of(place, &b.lhs, problems);
                let rhs = self.labels_of(place, &b.rhs, problems);
                Some(&lhs? | &rhs?)
            }
            Expr::Paren(p) => self.labels_of(place, &p.expr, problems),
            Expr::Unary(u) => self.labels_of(place, &u.expr, problems),
            Expr::Subquery(s) => self.labels_of(place, &s.expr, problems),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Some(BTreeSet::new()),
            Expr::Extension(_) => None,
        }
    }

    fn selector(
        &self,
        place: &str,
        vs: &VectorSelector,
        problems: &mut Problems,
    ) -> Option<BTreeSet<String>> {
        let name = vs
            .name
            .as_deref()
            .filter(|n| n.starts_with("studio_relay_"))?;
        let Some((family, labels)) = self.series.get(name) else {
            problems.push(format!("{place}: {name} is not a metric the relay exports"));
            return None;
        };
        let mut available = labels.clone();
        available.extend(TARGET_LABELS.map(String::from));
        let matchers = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten());
        for m in matchers.filter(|m| m.name != "__name__" && !available.contains(&m.name)) {
            problems.push(format!(
                "{place}: {family} has no label `{}` (labels: {labels:?})",
                m.name
            ));
        }
        Some(available)
    }
}

/// The PrometheusRule objects: deploy/prometheus/alerts.yaml and any in the renders.
fn prometheus_rules() -> Vec<(String, Value)> {
    let mut rules: Vec<(String, Value)> = yaml_documents(&read(ALERTS), ALERTS)
        .into_iter()
        .map(|d| (format!("{ALERTS} {}", id(&d)), d))
        .collect();
    rules.extend(
        all_objects()
            .filter(|o| kind(o) == "PrometheusRule")
            .map(|o| (id(o), o.clone())),
    );
    rules
}

#[test]
fn alert_rules_name_real_metrics_and_runbook_sections() {
    let exported = Exported::from_the_registry();
    let sections = anchors(&read(OPERATIONS_GUIDE));
    let mut problems = Problems::default();
    let mut alerts = BTreeSet::new();
    let rules = prometheus_rules();
    problems.check(!rules.is_empty(), || {
        format!("no PrometheusRule in {ALERTS}")
    });
    for (place, object) in rules {
        problems.check(
            object["apiVersion"] == "monitoring.coreos.com/v1" && kind(&object) == "PrometheusRule",
            || format!("{place}: expected a monitoring.coreos.com/v1 PrometheusRule"),
        );
        for group in items(&object, "/spec/groups") {
            for rule in items(group, "/rules") {
                let name = rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .unwrap_or_default();
                let place = format!("{place} rule {name}");
                exported.check_promql(
                    &place,
                    rule["expr"].as_str().unwrap_or_default(),
                    &mut problems,
                );
                if rule.get("alert").is_some() {
                    problems.check(alerts.insert(name.to_string()), || {
                        format!("{place}: a second alert of that name")
                    });
                    check_alert(&place, rule, &sections, &mut problems);
                }
            }
        }
    }
    problems.assert_none("alert rules");
}

fn check_alert(place: &str, rule: &Value, sections: &BTreeSet<String>, problems: &mut Problems) {
    let severity = &rule["labels"]["severity"];
    problems.check(
        ["critical", "warning", "info"]
            .iter()
            .any(|s| severity == s),
        || format!("{place}: labels.severity must be critical, warning or info (is {severity})"),
    );
    for annotation in ["summary", "description", "runbook"] {
        problems.check(
            rule["annotations"][annotation]
                .as_str()
                .is_some_and(|a| !a.is_empty()),
            || format!("{place}: annotations.{annotation} is required"),
        );
    }
    let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
    let (doc, anchor) = runbook.split_once('#').unwrap_or((runbook, ""));
    problems.check(doc == OPERATIONS_GUIDE && sections.contains(anchor), || {
        format!("{place}: runbook {runbook} is not a section of {OPERATIONS_GUIDE}")
    });
}

/// promtool reads the rule groups as Prometheus itself will: the group and
/// rule fields, durations, PromQL, and the label and annotation templates.
#[test]
fn alert_rules_pass_promtool() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut problems = Problems::default();
    for (i, (place, object)) in prometheus_rules().into_iter().enumerate() {
        let file = dir.path().join(format!("rules-{i}.yaml"));
        let groups = serde_json::json!({ "groups": object["spec"]["groups"] });
        std::fs::write(&file, serde_json::to_string(&groups).unwrap()).expect("rules written");
        if let Err(e) = run_tool(
            "promtool",
            &["check", "rules", file.to_str().unwrap()],
            None,
        ) {
            problems.push(format!("{place}: {e}"));
        }
    }
    problems.assert_none("alert rules (promtool)");
}

#[test]
fn dashboard_queries_name_real_metrics() {
    let exported = Exported::from_the_registry();
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut problems = Problems::default();
    for field in ["title", "uid", "panels", "schemaVersion"] {
        problems.check(dashboard.get(field).is_some(), || {
            format!("{DASHBOARD}: `{field}` missing")
        });
    }
    let variables: Vec<&str> = items(&dashboard, "/templating/list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in items(&dashboard, "/templating/list") {
        let place = format!("{DASHBOARD} variable {}", v["name"]);
        for query in [&v["definition"], &v["query"]["query"]] {
            if let Some(query) = query.as_str() {
                check_label_values(&exported, &place, query, &mut problems);
            }
        }
    }
    let panels = items(&dashboard, "/panels")
        .iter()
        .flat_map(|p| std::iter::once(p).chain(items(p, "/panels")));
    let mut ids = BTreeSet::new();
    for panel in panels {
        let place = format!("{DASHBOARD} panel {} {}", panel["id"], panel["title"]);
        problems.check(ids.insert(panel["id"].to_string()), || {
            format!("{place}: a second panel with that id")
        });
        let grid = &panel["gridPos"];
        let fits = ["x", "y", "w", "h"].iter().all(|k| grid[k].is_u64())
            && grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(0) <= 24;
        problems.check(fits, || {
            format!("{place}: gridPos {grid} is not within the 24 columns")
        });
        let datasource = panel["datasource"]["uid"].as_str().unwrap_or_default();
        if let Some(var) = datasource.strip_prefix('$') {
            let var = var.trim_matches(|c| c == '{' || c == '}');
            problems.check(variables.contains(&var), || {
                format!("{place}: datasource {datasource} is not a dashboard variable")
            });
        }
        let mut refs = BTreeSet::new();
        for target in items(panel, "/targets") {
            problems.check(refs.insert(target["refId"].to_string()), || {
                format!("{place}: refId {} repeats", target["refId"])
            });
            let expr = target["expr"].as_str().unwrap_or_default();
            let concrete = substitute_variables(expr, &variables).map_err(|var| {
                problems.push(format!(
                    "{place}: uses ${var}, which is not a dashboard variable"
                ))
            });
            if let Ok(concrete) = concrete {
                exported.check_promql(&place, &concrete, &mut problems);
            }
        }
    }
    problems.assert_none("Grafana dashboard");
}

/// Grafana's `label_values(metric, label)` variable query: the series exist
/// and carry the label.
fn check_label_values(exported: &Exported, place: &str, query: &str, problems: &mut Problems) {
    let call = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'));
    let Some((selector, label)) = call.and_then(|c| c.rsplit_once(',')) else {
        return;
    };
    let (selector, label) = (selector.trim(), label.trim());
    let Ok(ast) = parser::parse(selector) else {
        return problems.push(format!("{place}: {selector} does not parse as PromQL"));
    };
    if let Some(labels) = exported.labels_of(place, &ast, problems) {
        problems.check(labels.contains(label), || {
            format!("{place}: {query}: {selector} has no label `{label}`")
        });
    }
}

/// A dashboard query with Grafana's variables replaced by values PromQL
/// accepts: `$__rate_interval` and friends by a range, the dashboard's own
/// variables by a regex. `Err` names an undefined variable.
fn substitute_variables(expr: &str, variables: &[&str]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let braced = after.starts_with('{');
        let name: String = after
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let consumed = name.len() + if braced { 2 } else { 0 };
        if name.starts_with("__") {
            out.push_str("5m");
        } else if variables.contains(&name.as_str()) {
            out.push_str(".*");
        } else {
            return Err(name);
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The guide's metrics table lists every family the registry registers, with
/// its type and labels, and nothing else; PromQL elsewhere in the guide names
/// exported series.
#[test]
fn operations_guide_documents_every_metric_as_registered() {
    let exported = Exported::from_the_registry();
    let guide = read(OPERATIONS_GUIDE);
    let mut problems = Problems::default();
    let table = metrics_table(&guide);
    for f in &exported.families {
        let place = format!("{OPERATIONS_GUIDE} metrics table: {}", f.name);
        let Some((documented, labels)) = table.get(&f.name) else {
            problems.push(format!("{place}: not documented"));
            continue;
        };
        let registered = match f.kind {
            MetricType::COUNTER => "counter",
            MetricType::HISTOGRAM => "histogram",
            _ => "gauge",
        };
        problems.check(documented == registered, || {
            format!("{place}: documented as a {documented}, registered as a {registered}")
        });
        let mut expected = f.labels.clone();
        expected.sort();
        problems.check(*labels == expected, || {
            format!("{place}: documented labels {labels:?}, registered {expected:?}")
        });
    }
    for name in table.keys() {
        problems.check(exported.families.iter().any(|f| &f.name == name), || {
            format!("{OPERATIONS_GUIDE} metrics table: {name} is not a metric the relay registers")
        });
    }
    for (place, code) in promql_in_prose(&guide) {
        exported.check_promql(&place, &code, &mut problems);
    }
    problems.assert_none("operations guide metrics");
}

/// The rows `| `name` | type | labels | meaning |` of the guide: name → (type, sorted labels).
fn metrics_table(guide: &str) -> BTreeMap<String, (String, Vec<String>)> {
    guide
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells
                .get(1)?
                .strip_prefix("`studio_relay_")?
                .strip_suffix('`')?;
            let mut labels: Vec<String> = cells
                .get(3)?
                .split(',')
                .map(|l| l.trim().to_string())
                .filter(|l| l != "none")
                .collect();
            labels.sort();
            Some((
                format!("studio_relay_{name}"),
                (cells.get(2)?.to_string(), labels),
            ))
        })
        .collect()
}

/// Code spans of the guide's Metrics and Alerts sections that name a
/// `studio_relay_*` series, outside the metrics table (checked on its own).
/// Other sections also name dead-letter headers `studio_relay_*`, which are
/// no metrics.
fn promql_in_prose(guide: &str) -> Vec<(String, String)> {
    use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
    let mut out = Vec::new();
    let mut section = String::new();
    let mut in_h2 = false;
    let mut in_table = false;
    for event in Parser::new_ext(guide, pulldown_cmark::Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Heading {
                level: HeadingLevel::H2,
                ..
            }) => {
                in_h2 = true;
                section.clear();
            }
            Event::End(TagEnd::Heading(HeadingLevel::H2)) => in_h2 = false,
            Event::Start(Tag::Table(_)) => in_table = true,
            Event::End(TagEnd::Table) => in_table = false,
            Event::Text(t) if in_h2 => section.push_str(&t),
            Event::Code(code)
                if code.contains("studio_relay_")
                    && (section == "Alerts" || (section == "Metrics" && !in_table)) =>
            {
                let place = format!("{OPERATIONS_GUIDE} section {section}: `{code}`");
                out.push((place, code.to_string()));
            }
            _ => {}
        }
    }
    out
}

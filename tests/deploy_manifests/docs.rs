//! The operations guide's links: every anchor is a heading, every relative
//! link a file of the repository.

use std::collections::BTreeSet;
use std::path::Path;

use pulldown_cmark::{Event, Parser, Tag, TagEnd};

use crate::{read, root, Problems};

pub const OPERATIONS_GUIDE: &str = "docs/operations.md";

/// The anchors GitHub gives a Markdown file's headings: lower case, spaces to
/// hyphens, punctuation dropped, `-1`, `-2`... for repeats.
pub fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let slug: String = heading
                    .take()
                    .unwrap_or_default()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect();
                let unique = (0..)
                    .map(|n| {
                        if n == 0 {
                            slug.clone()
                        } else {
                            format!("{slug}-{n}")
                        }
                    })
                    .find(|s| !out.contains(s))
                    .expect("a free anchor");
                out.insert(unique);
            }
            _ => {}
        }
    }
    out
}

/// Link destinations of a Markdown file.
fn links(markdown: &str) -> Vec<String> {
    Parser::new(markdown)
        .filter_map(|e| match e {
            Event::Start(Tag::Link { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn operations_guide_links_resolve() {
    let guide = read(OPERATIONS_GUIDE);
    let mut problems = Problems::default();
    for link in links(&guide) {
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
        let target = if file.is_empty() {
            Path::new(OPERATIONS_GUIDE).to_path_buf()
        } else {
            Path::new("docs").join(file)
        };
        if !root().join(&target).exists() {
            problems.push(format!(
                "{OPERATIONS_GUIDE}: link {link}: {} does not exist",
                target.display()
            ));
            continue;
        }
        if !anchor.is_empty() {
            let text = std::fs::read_to_string(root().join(&target)).unwrap_or_default();
            problems.check(anchors(&text).contains(anchor), || {
                format!(
                    "{OPERATIONS_GUIDE}: link {link}: #{anchor} is not a heading of {}",
                    target.display()
                )
            });
        }
    }
    problems.assert_none("operations guide links");
}

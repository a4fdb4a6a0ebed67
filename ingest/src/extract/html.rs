//! HTML and XHTML (also each chapter of an EPUB), parsed by html5ever through `scraper`.
//!
//! The tree is walked without recursion (a file of 100,000 nested `<div>`s is one loop, not
//! a stack overflow). Headings become `#` lines, so chunks keep their heading path; list
//! items and table rows a line each; scripts, styles and the like are left out.

use ego_tree::iter::Edge;
use scraper::{Html, Node, Selector};

use super::TextBuilder;

/// Elements whose content is not text a reader sees.
const SKIPPED: &[&str] = &[
    "head", "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object",
    "select", "button",
];

/// Elements that end the paragraph before them and start a new one.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "aside",
    "header",
    "footer",
    "nav",
    "blockquote",
    "pre",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "figure",
    "figcaption",
    "hr",
    "address",
    "details",
    "summary",
    "body",
    "form",
    "fieldset",
    "caption",
];

/// The text of an HTML document, and its `<title>`.
pub(crate) fn to_text(html: &str) -> (String, Option<String>) {
    let doc = Html::parse_document(html);
    let mut b = TextBuilder::default();
    walk(&doc, &mut b);
    let title = Selector::parse("title")
        .ok()
        .and_then(|s| doc.select(&s).next())
        .map(|t| super::squash(&t.text().collect::<String>()))
        .filter(|t| !t.is_empty());
    (b.finish().0, title)
}

/// Appends the text of `doc` to `b`.
pub(crate) fn walk(doc: &Html, b: &mut TextBuilder) {
    let mut buf = String::new();
    let mut skipping = 0usize;
    let mut pre = 0usize;
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Text(t) if skipping == 0 => {
                    if pre > 0 {
                        buf.push_str(t);
                    } else {
                        buf.push_str(&t.replace('\n', " "));
                    }
                }
                Node::Element(e) => {
                    let name = e.name();
                    if SKIPPED.contains(&name) {
                        skipping += 1;
                    } else if skipping > 0 {
                    } else if heading_level(name).is_some() || BLOCKS.contains(&name) {
                        b.paragraph(&std::mem::take(&mut buf));
                        if name == "li" {
                            buf.push_str("- ");
                        }
                        if name == "pre" {
                            pre += 1;
                        }
                    } else if name == "br" {
                        buf.push('\n');
                    } else if matches!(name, "td" | "th") && !buf.trim().is_empty() {
                        buf.push_str(" | ");
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(e) = node.value() {
                    let name = e.name();
                    if SKIPPED.contains(&name) {
                        skipping = skipping.saturating_sub(1);
                    } else if skipping > 0 {
                    } else if let Some(level) = heading_level(name) {
                        b.heading(level, &std::mem::take(&mut buf));
                    } else if BLOCKS.contains(&name) {
                        if name == "pre" {
                            pre = pre.saturating_sub(1);
                        }
                        b.paragraph(&std::mem::take(&mut buf));
                    } else if matches!(name, "td" | "th") {
                        buf.push(' ');
                    }
                }
            }
        }
    }
    b.paragraph(&buf);
}

fn heading_level(name: &str) -> Option<usize> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_paragraphs_lists_and_tables() {
        let (text, title) = to_text(
            "<html><head><title>The Guide</title><style>p{}</style></head><body>\
             <h1>Install</h1><p>Run the\n   installer.</p><script>alert(1)</script>\
             <ul><li>one</li><li>two <b>bold</b></li></ul>\
             <h2>Table</h2><table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>\
             <p>line<br>break</p></body></html>",
        );
        assert_eq!(title.as_deref(), Some("The Guide"));
        assert_eq!(
            text,
            "# Install\n\nRun the installer.\n\n- one\n\n- two bold\n\n## Table\n\nk | v\n\na | 1\n\nline\nbreak"
        );
    }

    #[test]
    fn deep_nesting_is_not_a_stack_overflow() {
        let html = format!("{}deep{}", "<div>".repeat(50_000), "</div>".repeat(50_000));
        let (text, _) = to_text(&html);
        assert_eq!(text, "deep");
    }
}

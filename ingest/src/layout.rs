//! Where a line is in a document: its page (PDF pages, PPTX slides) and its heading path.
//!
//! Chunks store only line spans; the page and section a citation shows are read back from
//! the document's extracted text through a [`Layout`], so they need no column of their own
//! in the stores and are right for documents indexed before they were shown.

use serde::Serialize;

use crate::extract::{Extracted, Format};

/// A span's place in its document, as a citation shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The page (PDF) or slide (PPTX), 1-based, the span starts on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The heading path the span sits under, outermost first, joined by ` › `.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
}

/// A heading of the extracted text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heading {
    /// 1-based line the heading is on.
    pub line: u32,
    /// 1 (`#`) to 6.
    pub level: u8,
    /// The heading text.
    pub title: String,
    /// Only blank lines lie between this heading and the next one.
    #[serde(skip)]
    next_follows: bool,
}

/// The pages and headings of one extracted document, by line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// What a page is called (`page`, `slide`), for paged formats.
    pub page_name: Option<&'static str>,
    /// The 1-based line each page starts on, page 1 first.
    pub pages: Vec<u32>,
    /// Every heading, in order.
    pub headings: Vec<Heading>,
}

/// Separates the levels of a heading path.
pub const SECTION_SEPARATOR: &str = " › ";

impl Layout {
    /// The layout of an extracted document.
    pub fn of(e: &Extracted) -> Self {
        Self::new(Some(e.format), &e.text, e.pages.clone())
    }

    /// The layout of a document in `format` with `text` and page starts `pages`.
    pub fn new(format: Option<Format>, text: &str, pages: Vec<u32>) -> Self {
        Layout {
            page_name: format.and_then(Format::page_name),
            pages,
            headings: headings(text),
        }
    }

    /// The page (1-based) that holds `line`, for paged formats.
    pub fn page_of(&self, line: u32) -> Option<u32> {
        let after = self.pages.partition_point(|&start| start <= line);
        u32::try_from(after).ok().filter(|&p| p > 0)
    }

    /// Where the span `start..=end` is: the page it starts on, and the heading path in force
    /// where its text begins (a span that opens with headings is under the last of them),
    /// or, when no heading comes before it, under the first heading inside it.
    pub fn locate(&self, start: u32, end: u32) -> Location {
        let mut at = start;
        let mut i = self.headings.partition_point(|h| h.line < start);
        // Headings one after another (blank lines between) at the start of the span.
        while let (Some(h), Some(next)) = (self.headings.get(i), self.headings.get(i + 1)) {
            if h.line != at || !h.next_follows || next.line > end {
                break;
            }
            at = next.line;
            i += 1;
        }
        let before = self.headings.partition_point(|h| h.line <= at);
        let upto = if before == 0 {
            self.headings.partition_point(|h| h.line <= end).min(1)
        } else {
            before
        };
        // The path: walking back, each heading of a smaller level than the last one kept.
        let mut path: Vec<&str> = Vec::new();
        let mut level = u8::MAX;
        for h in self.headings[..upto].iter().rev() {
            if h.level < level {
                path.push(&h.title);
                level = h.level;
            }
            if level == 1 {
                break;
            }
        }
        path.reverse();
        Location {
            page: self.page_of(start),
            section: (!path.is_empty()).then(|| path.join(SECTION_SEPARATOR)),
        }
    }
}

/// The Markdown ATX headings (`# Title` … `###### Title`) of `text`, outside code fences.
fn headings(text: &str) -> Vec<Heading> {
    let mut out: Vec<Heading> = Vec::new();
    let mut fenced = false;
    // Whether only blank lines came since the last heading.
    let mut bare = false;
    for (i, line) in text.lines().enumerate() {
        let fence = line.starts_with("```") || line.starts_with("~~~");
        fenced ^= fence;
        let hashes = line.bytes().take_while(|&b| b == b'#').count();
        let title = (!fenced && !fence && (1..=6).contains(&hashes))
            .then(|| line[hashes..].strip_prefix(' '))
            .flatten()
            .map(|t| t.trim().trim_end_matches('#').trim())
            .filter(|t| !t.is_empty());
        let Some(title) = title else {
            bare &= line.trim().is_empty();
            continue;
        };
        if let Some(last) = out.last_mut() {
            last.next_follows = bare;
        }
        out.push(Heading {
            line: u32::try_from(i + 1).unwrap_or(u32::MAX),
            level: hashes as u8,
            title: title.to_string(),
            next_follows: false,
        });
        bare = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_follow_the_heading_path() {
        let text = "intro\n# Guide\ntext\n## Install\nsteps\n### On Windows\nmsi\n## Use\nrun\n```\n# not a heading\n```\n#nospace";
        let l = Layout::new(Some(Format::Html), text, Vec::new());
        assert_eq!(l.headings.len(), 4);
        let section = |s, e| l.locate(s, e).section;
        // Before any heading: the first heading inside the span, else none.
        assert_eq!(section(1, 1), None);
        assert_eq!(section(1, 3).as_deref(), Some("Guide"));
        assert_eq!(section(3, 3).as_deref(), Some("Guide"));
        assert_eq!(section(5, 5).as_deref(), Some("Guide › Install"));
        // A span opening with headings is about the last of them.
        assert_eq!(section(2, 5).as_deref(), Some("Guide"));
        assert_eq!(section(4, 7).as_deref(), Some("Guide › Install"));
        let stacked = Layout::new(None, "# A\n\n## B\n\ntext\n\n## C", Vec::new());
        assert_eq!(stacked.locate(1, 6).section.as_deref(), Some("A › B"));
        assert_eq!(stacked.locate(1, 1).section.as_deref(), Some("A"));
        assert_eq!(
            section(7, 9).as_deref(),
            Some("Guide › Install › On Windows")
        );
        // A sibling replaces its predecessor, and fenced lines are not headings.
        assert_eq!(section(9, 13).as_deref(), Some("Guide › Use"));
        assert_eq!(l.locate(9, 9).page, None);
    }

    #[test]
    fn pages_by_line() {
        let l = Layout::new(Some(Format::Pdf), "a\n\nb\n\nc", vec![1, 3, 3, 5]);
        assert_eq!(l.page_name, Some("page"));
        assert_eq!(l.page_of(0), None);
        assert_eq!(l.page_of(1), Some(1));
        assert_eq!(l.page_of(2), Some(1));
        // Page 2 has no text of its own: a line on 3 is on page 3.
        assert_eq!(l.page_of(3), Some(3));
        assert_eq!(l.locate(5, 5).page, Some(4));
        assert_eq!(l.locate(5, 5).section, None);
    }
}

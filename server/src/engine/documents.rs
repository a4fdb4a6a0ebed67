//! Indexed documents as a reader sees them: where a hit sits in its document (page,
//! section), and a document's indexed text by id, for a citation to open.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;
use sovrag_ingest::extract::Format;
use sovrag_ingest::layout::{Heading, Layout};
use sovrag_ingest::load;
use sovrag_retrieve::{ChunkRecord, Hit};

use super::Engine;

/// Layouts kept in memory, by content hash; the set is dropped whole when it grows past this.
const MAX_LAYOUTS: usize = 512;

/// A document's text as sovrag indexed it, with where its pages and headings are.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentText {
    /// The indexed document's id; absent for a file that is not indexed (`sovrag extract`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc_id: Option<String>,
    pub path: String,
    /// `pdf`, `html`, `docx`, `odt`, `pptx`, `epub`, or `text`.
    pub format: String,
    pub title: Option<String>,
    /// What a page is called (`page`, `slide`), for paged formats.
    pub page_name: Option<&'static str>,
    pub pages: Vec<PageStart>,
    pub headings: Vec<Heading>,
    /// Number of lines of `text`; citations' line numbers count these.
    pub lines: usize,
    pub text: String,
    /// The file changed or vanished since it was indexed: `text` is put back together from
    /// the indexed chunks (line numbers hold; lines that no chunk holds are blank).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reassembled: bool,
}

/// Where a page starts in [`DocumentText::text`].
#[derive(Debug, Clone, Serialize)]
pub struct PageStart {
    pub page: usize,
    pub start_line: u32,
}

impl DocumentText {
    /// The text of a document read as `format` (`None`: plain text or Markdown).
    pub fn new(path: &str, format: Option<Format>, title: Option<String>, text: String) -> Self {
        Self::with_pages(path, format, title, text, Vec::new())
    }

    fn with_pages(
        path: &str,
        format: Option<Format>,
        title: Option<String>,
        text: String,
        pages: Vec<u32>,
    ) -> Self {
        let layout = Layout::new(format, &text, pages);
        DocumentText {
            doc_id: None,
            path: path.to_string(),
            format: format.map_or_else(|| "text".into(), |f| f.name().into()),
            title,
            page_name: layout.page_name,
            pages: layout
                .pages
                .iter()
                .enumerate()
                .map(|(i, &start_line)| PageStart {
                    page: i + 1,
                    start_line,
                })
                .collect(),
            headings: layout.headings,
            lines: text.split('\n').count(),
            text,
            reassembled: false,
        }
    }

    /// What extraction made of a document.
    pub fn extracted(path: &str, e: sovrag_ingest::extract::Extracted) -> Self {
        Self::with_pages(path, Some(e.format), e.title, e.text, e.pages)
    }
}

impl Engine {
    /// Fills in the page and section of hits in documents that have them (PDF, HTML, office
    /// documents, EPUB: from the layout kept with their extracted text; Markdown: from the
    /// file's headings, while the file is what was indexed).
    pub(super) async fn locate(&self, hits: &mut [Hit]) -> Result<()> {
        let mut paths: Vec<&str> = hits
            .iter()
            .map(|h| h.path.as_str())
            .filter(|p| Format::of(Path::new(p)).is_some() || load::is_markdown(Path::new(p)))
            .collect();
        if paths.is_empty() {
            return Ok(());
        }
        paths.sort_unstable();
        paths.dedup();
        let hashes = self.store.documents_at(&paths).await?;
        for h in hits.iter_mut() {
            if let Some(layout) = hashes.get(&h.path).and_then(|k| self.layout(k, &h.path)) {
                h.location = layout.locate(h.start_line, h.end_line);
            }
        }
        Ok(())
    }

    /// The layout of the document at `path` indexed with content hash `key`: from its kept
    /// extraction, or, for Markdown, from the file if it still has that content.
    fn layout(&self, key: &str, path: &str) -> Option<Arc<Layout>> {
        if let Some(l) = self.layouts.lock().expect("layouts lock").get(key) {
            return l.clone();
        }
        let path = Path::new(path);
        let layout = match self.extractor.cached(key) {
            Some(e) => Some(Layout::of(&e)),
            None if load::is_markdown(path) => {
                load::load_document(path, self.config.max_file_bytes, &self.extractor)
                    .ok()
                    .filter(|d| d.content_hash == key)
                    .map(|d| Layout::new(None, &d.text, Vec::new()))
            }
            None => None,
        }
        .map(Arc::new);
        let mut layouts = self.layouts.lock().expect("layouts lock");
        if layouts.len() >= MAX_LAYOUTS {
            layouts.clear();
        }
        layouts.insert(key.to_string(), layout.clone());
        layout
    }

    /// The indexed text of the document `doc_id`; `None` if no such document is indexed.
    ///
    /// The text is what was indexed: the kept extraction, or the file if its content is still
    /// the indexed content; otherwise it is reassembled from the chunks.
    pub async fn document(&self, doc_id: &str) -> Result<Option<DocumentText>> {
        let chunks = self.store.document(doc_id).await?;
        let Some(first) = chunks.first() else {
            return Ok(None);
        };
        let (path, key) = (first.path.clone(), first.content_hash.clone());
        let (extractor, max) = (self.extractor.clone(), self.config.max_file_bytes);
        let read = tokio::task::spawn_blocking(move || {
            let format = Format::of(Path::new(&path));
            if let Some(e) = extractor.cached(&key) {
                return Some(DocumentText::extracted(&path, e));
            }
            // Read again (and, for a document, extracted again) only if unchanged.
            let d = load::load_document(Path::new(&path), max, &extractor).ok()?;
            if d.content_hash != key {
                return None;
            }
            Some(match format.and_then(|_| extractor.cached(&key)) {
                Some(e) => DocumentText::extracted(&path, e),
                None => DocumentText::new(&path, format, Some(d.title), d.text),
            })
        })
        .await?;
        let mut doc = read.unwrap_or_else(|| reassemble(&chunks));
        doc.doc_id = Some(doc_id.to_string());
        Ok(Some(doc))
    }
}

/// A document's text put back together from its chunks, each at its line span.
fn reassemble(chunks: &[ChunkRecord]) -> DocumentText {
    let last = chunks.iter().map(|c| c.end_line).max().unwrap_or(0) as usize;
    let mut lines = vec![""; last];
    for c in chunks {
        for (i, line) in c.text.split('\n').enumerate() {
            if let Some(slot) = lines.get_mut((c.start_line as usize).saturating_sub(1) + i)
                && slot.len() < line.len()
            {
                *slot = line;
            }
        }
    }
    let path = chunks.first().map_or("", |c| c.path.as_str());
    let title = chunks.first().map(|c| c.title.clone());
    let mut doc = DocumentText::new(path, Format::of(Path::new(path)), title, lines.join("\n"));
    doc.reassembled = true;
    doc
}

//! Text out of documents that are not plain text: PDF, HTML/XHTML, DOCX, ODT, PPTX, EPUB,
//! RTF.
//!
//! Each format becomes Markdown-like text (headings as `#` lines, one paragraph a line, a
//! blank line between), so the chunker keeps a chunk's heading path for every format, and
//! line numbers mean the same thing as for a text file. Pages (PDF) and slides (PPTX) are
//! recorded as the line each one starts on.
//!
//! Parsing hostile files is where crashes, hangs and memory blow-ups live, so indexing never
//! does it in its own process: [`Isolation::extract`] runs the `sovrag` binary again as a
//! worker ([`worker_main`]) under a wall-clock limit, an address-space limit and a cap on
//! what zip members may decompress to. A worker that dies costs its one file, skipped with a
//! [`Failure`] that says why.

mod html;
mod office;
mod pdf;
mod rtf;
mod worker;

use std::path::{Path, PathBuf};

pub use worker::{Isolation, Limits, worker_main};

/// The extractors' version, part of an extracted document's content hash: bump it when the
/// text they produce, or how it is chunked, changes, and every such document is read again.
/// (x2: chunks end where pages end.)
pub const VERSION: &str = "x4";

/// Extraction in workers, with results kept by content hash: an unchanged or renamed file is
/// never extracted twice. Failures are kept too, so a file that crashes or hangs a worker
/// costs that once, not at every re-sync; a changed file has a new hash and is tried again.
#[derive(Debug, Clone)]
pub struct Extractor {
    isolation: Isolation,
    cache: Option<PathBuf>,
}

impl Extractor {
    /// `cache`: a folder for results (created on first use); `None` keeps nothing.
    pub fn new(isolation: Isolation, cache: Option<PathBuf>) -> Self {
        Self { isolation, cache }
    }

    /// The text of `path`, whose content hash is `key`.
    pub fn extract(&self, path: &Path, key: &str) -> Result<Extracted, Failure> {
        if let Some(hit) = self.stored(key) {
            return hit;
        }
        let file = self.cache_file(key);
        let started = std::time::Instant::now();
        let result = self.isolation.extract(path);
        match &result {
            Ok(e) => tracing::debug!(
                path = %path.display(),
                pages = e.pages.len(),
                secs = started.elapsed().as_secs_f32(),
                "extracted"
            ),
            Err(f) => tracing::warn!(path = %path.display(), "not extracted: {f}"),
        }
        if let (Some(file), Ok(json)) = (&file, serde_json::to_vec(&result)) {
            // Written whole, then renamed: a reader never sees half a file.
            let tmp = file.with_extension("json.tmp");
            let stored = file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&tmp, json))
                .and_then(|()| std::fs::rename(&tmp, file));
            if let Err(e) = stored {
                tracing::debug!("extraction cache not written: {e}");
            }
        }
        result
    }

    /// What extraction made of the content with hash `key`, if it is kept: the text indexed
    /// for it, without reading or extracting anything again.
    pub fn cached(&self, key: &str) -> Option<Extracted> {
        self.stored(key)?.ok()
    }

    fn stored(&self, key: &str) -> Option<Result<Extracted, Failure>> {
        let bytes = std::fs::read(self.cache_file(key)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn cache_file(&self, key: &str) -> Option<PathBuf> {
        // A key is a hex digest and a version; anything else never names a cache file.
        let safe = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        Some(self.cache.as_ref()?.join(format!("{key}.json"))).filter(|_| safe)
    }
}

/// The formats read through extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `.pdf`: the text layer, page by page.
    Pdf,
    /// `.html`, `.htm`, `.xhtml`.
    Html,
    /// `.docx` (Word).
    Docx,
    /// `.odt` (OpenDocument text).
    Odt,
    /// `.pptx` (PowerPoint): a slide is a page.
    Pptx,
    /// `.epub`: the spine's chapters.
    Epub,
    /// `.rtf`: the body text.
    Rtf,
}

impl Format {
    /// The format of `path`, by its extension; `None` for everything read as text.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "pdf" => Self::Pdf,
            "html" | "htm" | "xhtml" => Self::Html,
            "docx" => Self::Docx,
            "odt" => Self::Odt,
            "pptx" => Self::Pptx,
            "epub" => Self::Epub,
            "rtf" => Self::Rtf,
            _ => return None,
        })
    }

    /// The format's name, as in JSON: `pdf`, `html`, `docx`, `odt`, `pptx`, `epub`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Html => "html",
            Self::Docx => "docx",
            Self::Odt => "odt",
            Self::Pptx => "pptx",
            Self::Epub => "epub",
            Self::Rtf => "rtf",
        }
    }

    /// What a page is called in this format, where it has pages.
    pub fn page_name(self) -> Option<&'static str> {
        match self {
            Self::Pdf => Some("page"),
            Self::Pptx => Some("slide"),
            _ => None,
        }
    }
}

/// A document's text as sovrag indexes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extracted {
    /// What it was read as.
    pub format: Format,
    /// Markdown-like text: `#` headings, a paragraph a line.
    pub text: String,
    /// For paged formats (PDF pages, PPTX slides): the 1-based line each page starts on,
    /// page 1 first. Empty for the others.
    pub pages: Vec<u32>,
    /// The document's own title, where it names one.
    pub title: Option<String>,
}

/// Why a document yielded no text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum Failure {
    /// It ran past the wall-clock limit.
    #[error("timeout: extraction ran past {0} s")]
    Timeout(u64),
    /// The worker died (panic, abort, stack overflow, signal).
    #[error("crash: the extraction worker died ({0})")]
    Crash(String),
    /// It needed more memory than the worker may have, or decompresses past the cap.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Password-protected.
    #[error("encrypted: the document needs a password")]
    Encrypted,
    /// Readable, but no text in it (a scanned PDF, an empty document).
    #[error("no text layer: {0}")]
    NoText(String),
    /// Not a valid file of its format.
    #[error("unreadable: {0}")]
    Unreadable(String),
}

impl Failure {
    /// A short name for counting skips by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Crash(_) => "crash",
            Self::TooLarge(_) => "too large",
            Self::Encrypted => "encrypted",
            Self::NoText(_) => "no text layer",
            Self::Unreadable(_) => "unreadable",
        }
    }
}

/// Extracts `bytes` in this process. Only the worker calls this on files it has not made
/// itself: see [`Isolation`].
pub fn extract_bytes(format: Format, bytes: &[u8], limits: &Limits) -> Result<Extracted, Failure> {
    let out = match format {
        Format::Pdf => pdf::extract(bytes)?,
        Format::Html => {
            let text = String::from_utf8_lossy(bytes);
            let (text, title) = html::to_text(&text);
            Extracted {
                format,
                text,
                pages: Vec::new(),
                title,
            }
        }
        Format::Docx => office::docx(bytes, limits)?,
        Format::Odt => office::odt(bytes, limits)?,
        Format::Pptx => office::pptx(bytes, limits)?,
        Format::Epub => office::epub(bytes, limits)?,
        Format::Rtf => rtf::extract(bytes)?,
    };
    if out.text.trim().is_empty() {
        return Err(Failure::NoText(match format {
            Format::Pdf => "no page has extractable text (a scanned PDF?)".into(),
            _ => "the document holds no text".into(),
        }));
    }
    Ok(out)
}

/// Builds extracted text: paragraphs and headings a line each, a blank line between blocks,
/// with the line each page starts on.
#[derive(Default)]
pub(crate) struct TextBuilder {
    text: String,
    lines: u32,
    pages: Vec<u32>,
    /// Pages begun whose first line is not written yet.
    pending: usize,
}

impl TextBuilder {
    /// Starts a new page (or slide): it begins at the next block's first line.
    pub(crate) fn page(&mut self) {
        self.pending += 1;
    }

    /// Adds a heading of `level` (1–6).
    pub(crate) fn heading(&mut self, level: usize, text: &str) {
        let text = squash(text);
        if !text.is_empty() {
            self.block(&format!("{} {text}", "#".repeat(level.clamp(1, 6))));
        }
    }

    /// Adds a paragraph; internal line breaks are kept, blank lines inside it dropped.
    pub(crate) fn paragraph(&mut self, text: &str) {
        let lines: Vec<String> = text.lines().map(squash).filter(|l| !l.is_empty()).collect();
        if !lines.is_empty() {
            self.block(&lines.join("\n"));
        }
    }

    fn block(&mut self, block: &str) {
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
            self.lines += 1;
        }
        // Pages with no text of their own start where this one does.
        for _ in 0..std::mem::take(&mut self.pending) {
            self.pages.push(self.lines + 1);
        }
        self.text.push_str(block);
        self.lines += u32::try_from(block.matches('\n').count()).unwrap_or(u32::MAX) + 1;
    }

    /// The text, and for each page the line it starts on (trailing pages with no text start
    /// on the last line).
    pub(crate) fn finish(mut self) -> (String, Vec<u32>) {
        let last = self.lines.max(1);
        for _ in 0..self.pending {
            self.pages.push(last);
        }
        (self.text, self.pages)
    }
}

/// Whitespace runs as one space, trimmed; control characters dropped.
pub(crate) fn squash(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        assert_eq!(Format::of(Path::new("a/B.PDF")), Some(Format::Pdf));
        assert_eq!(Format::of(Path::new("x.xhtml")), Some(Format::Html));
        assert_eq!(Format::of(Path::new("x.docx")), Some(Format::Docx));
        assert_eq!(Format::of(Path::new("x.md")), None);
        assert_eq!(Format::of(Path::new("Makefile")), None);
    }

    #[test]
    fn builder_numbers_lines_and_pages() {
        let mut b = TextBuilder::default();
        b.page();
        b.heading(2, "  Intro \t here ");
        b.paragraph("one\n\n two ");
        b.page();
        b.paragraph("three");
        let (text, pages) = b.finish();
        assert_eq!(text, "## Intro here\n\none\ntwo\n\nthree");
        // Lines: 1 heading, 2 blank, 3 one, 4 two, 5 blank, 6 three.
        assert_eq!(pages, vec![1, 6]);
        let mut b = TextBuilder::default();
        b.page();
        b.paragraph("a");
        b.page();
        b.page();
        b.paragraph("b");
        b.page();
        // An empty page starts where the next does; a trailing one on the last line.
        assert_eq!(b.finish().1, vec![1, 3, 3, 3]);
    }

    #[test]
    fn failures_have_reasons() {
        assert_eq!(Failure::Timeout(30).reason(), "timeout");
        assert_eq!(Failure::Encrypted.reason(), "encrypted");
        let f = Failure::NoText("scanned".into());
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Failure>(&json).unwrap(), f);
    }
}

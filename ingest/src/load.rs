//! Reading one file into text, defensively.
//!
//! Whatever is on disk, [`load_file`] either returns text or a [`crate::Error::Skipped`] that
//! says why in one line; it never panics and never blocks on a FIFO.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::extract::{Extractor, Format};
use crate::{Error, Result};

/// A file read into memory, ready to chunk.
#[derive(Debug, Clone)]
pub struct Document {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text (lossily decoded if it was not valid UTF-8; see `warning`).
    pub text: String,
    /// sha256 of the raw bytes, hex: an unchanged file is not re-embedded.
    pub content_hash: String,
    /// The first Markdown `# ` heading, else the file name.
    pub title: String,
    /// Whether to split along Markdown structure.
    pub markdown: bool,
    /// Something the user should know (e.g. invalid UTF-8 replaced), logged by the caller.
    pub warning: Option<String>,
    /// The format it was extracted from; `None` for text read as it is.
    pub format: Option<Format>,
    /// For paged formats (PDF pages, PPTX slides), the 1-based line each page starts on: no
    /// chunk spans two pages.
    pub pages: Vec<u32>,
}

/// How many leading bytes are inspected for NULs to call a file binary (git uses the same size).
const SNIFF_BYTES: usize = 8000;

/// Reads `path` as a text document, refusing what is not one.
///
/// Skips (with a reason) anything that is not a regular file, is larger than `max_bytes`,
/// is empty or whitespace-only, or looks binary (a NUL byte in the first 8000 bytes).
/// Invalid UTF-8 is decoded with U+FFFD replacements and a warning.
pub fn load_file(path: &Path, max_bytes: u64) -> Result<Document> {
    let skipped = |kind, reason: &str| Error::Skipped {
        path: path.to_path_buf(),
        kind,
        reason: reason.into(),
    };
    let bytes = read_bytes(path, max_bytes)?;
    if bytes[..bytes.len().min(SNIFF_BYTES)].contains(&0) {
        return Err(skipped("binary", "binary file (contains NUL bytes)"));
    }
    let content_hash = hex::encode(Sha256::digest(&bytes));
    let (text, warning) = match String::from_utf8(bytes) {
        Ok(t) => (t, None),
        Err(e) => (
            String::from_utf8_lossy(e.as_bytes()).into_owned(),
            Some(format!(
                "{}: invalid UTF-8 at byte {}; decoded with replacement characters",
                path.display(),
                e.utf8_error().valid_up_to()
            )),
        ),
    };
    if text.trim().is_empty() {
        return Err(skipped("empty", "empty file"));
    }
    let markdown = is_markdown(path);
    let title = markdown
        .then(|| {
            text.lines()
                .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_string()))
        })
        .flatten()
        .unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    Ok(Document {
        path: path.to_path_buf(),
        text,
        content_hash,
        title,
        markdown,
        warning,
        format: None,
        pages: Vec::new(),
    })
}

/// Reads `path` whole: a regular file of at most `max_bytes`, never blocking on a FIFO.
fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let skipped = |kind, reason: String| Error::Skipped {
        path: path.to_path_buf(),
        kind,
        reason,
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Check the type before opening: opening a FIFO for reading would block forever.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(skipped("not a regular file", "not a regular file".into()));
    }
    if meta.len() > max_bytes {
        return Err(skipped(
            "too large",
            format!(
                "{} bytes is over the {} byte limit (max_file_mb)",
                meta.len(),
                max_bytes
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Non-blocking open, and the type checked again on the open file: a FIFO swapped in
    // since the check above must not block us (O_NONBLOCK does not affect regular files).
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io)?
    };
    if !file.metadata().map_err(io)?.is_file() {
        return Err(skipped("not a regular file", "not a regular file".into()));
    }
    // `take` guards against a file that grows while we read it.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(skipped(
            "too large",
            "grew over the size limit while being read".into(),
        ));
    }
    Ok(bytes)
}

/// Whether `path` is read as Markdown (split along its headings, which give its sections).
pub fn is_markdown(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "md" | "markdown" | "mdx"))
}

/// Reads `path` as [`load_file`] does, except that documents of a format in
/// [`Format`] (PDF, HTML, DOCX, ODT, PPTX, EPUB) are read through `extractor`.
pub fn load_document(path: &Path, max_bytes: u64, extractor: &Extractor) -> Result<Document> {
    if Format::of(path).is_none() {
        return load_file(path, max_bytes);
    }
    let bytes = read_bytes(path, max_bytes)?;
    // The extractor's version is part of the hash: a file indexed as raw text before (HTML)
    // or by an older extractor counts as changed and is read again.
    let content_hash = format!(
        "{}-{}",
        hex::encode(Sha256::digest(&bytes)),
        crate::extract::VERSION
    );
    drop(bytes);
    let e = extractor
        .extract(path, &content_hash)
        .map_err(|f| Error::Skipped {
            path: path.to_path_buf(),
            kind: f.reason(),
            reason: f.to_string(),
        })?;
    let title = e.title.clone().unwrap_or_else(|| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(Document {
        path: path.to_path_buf(),
        text: e.text,
        content_hash,
        title,
        markdown: true,
        warning: None,
        format: Some(e.format),
        pages: e.pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn hostile_files_are_skipped_or_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let bin = write(dir.path(), "a.bin", b"abc\0def");
        assert!(matches!(
            load_file(&bin, 1 << 20),
            Err(Error::Skipped { .. })
        ));
        let empty = write(dir.path(), "e.txt", b"  \n");
        assert!(matches!(
            load_file(&empty, 1 << 20),
            Err(Error::Skipped { .. })
        ));
        let big = write(dir.path(), "big.txt", &[b'a'; 100]);
        assert!(matches!(load_file(&big, 10), Err(Error::Skipped { .. })));
        assert!(matches!(
            load_file(dir.path(), 1 << 20),
            Err(Error::Skipped { .. })
        ));
        let bad = write(dir.path(), "bad.txt", b"caf\xe9 au lait\n");
        let doc = load_file(&bad, 1 << 20).unwrap();
        assert_eq!(doc.text, "caf\u{fffd} au lait\n");
        assert!(doc.warning.unwrap().contains("invalid UTF-8"));
    }

    #[test]
    fn markdown_title_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let md = write(dir.path(), "x.md", b"intro\n# Watching folders\nbody\n");
        let doc = load_file(&md, 1 << 20).unwrap();
        assert!(doc.markdown);
        assert_eq!(doc.title, "Watching folders");
        assert_eq!(doc.content_hash.len(), 64);
        let txt = write(dir.path(), "y.txt", b"# not a title\n");
        assert_eq!(load_file(&txt, 1 << 20).unwrap().title, "y.txt");
    }
}

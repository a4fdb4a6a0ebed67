//! Splitting a document into overlapping, structure-aligned chunks with line spans.

use std::path::Path;

use sha2::{Digest, Sha256};
use text_splitter::{ChunkConfig, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

use crate::load::Document;
use crate::models::ModelPaths;
use crate::{Error, Result};

/// One piece of a document, small enough to embed whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// 0-based position in its document.
    pub ord: u32,
    /// The chunk text, exactly as in the file (trimmed at its ends).
    pub text: String,
    /// 1-based first line of the chunk in the file.
    pub start_line: u32,
    /// 1-based last line of the chunk in the file (inclusive).
    pub end_line: u32,
}

impl Chunk {
    /// The text given to the embedding model: the document title gives a chunk its context
    /// (a paragraph deep in "Watching folders" rarely repeats the words "watch" or "folder").
    pub fn embed_text(&self, title: &str) -> String {
        embed_text(title, &self.text)
    }
}

/// What is embedded for a chunk `text` of a document titled `title` (see [`Chunk::embed_text`]);
/// equal inputs give equal vectors, so a stored vector can be reused for it.
pub fn embed_text(title: &str, text: &str) -> String {
    if title.is_empty() || text.starts_with(&format!("# {title}")) {
        text.to_string()
    } else {
        format!("{title}\n\n{text}")
    }
}

/// A stable id for a document: the first 16 hex digits of sha256 of its path.
pub fn doc_id(path: &Path) -> String {
    hex::encode(&Sha256::digest(path.to_string_lossy().as_bytes())[..8])
}

/// Splits documents to a budget of embedding-model tokens, along Markdown structure
/// (headings, then paragraphs, then sentences) or plain-text structure.
pub struct Chunker {
    markdown: MarkdownSplitter<Tokenizer>,
    text: TextSplitter<Tokenizer>,
    tokenizer: Tokenizer,
}

impl Chunker {
    /// A chunker counting tokens with the embedding model's own tokenizer.
    ///
    /// `max_tokens` is the chunk budget (MiniLM reads at most 256, including 2 special
    /// tokens); `overlap` tokens are repeated between neighbours so a fact that straddles
    /// a boundary is whole in at least one chunk.
    pub fn new(models: &ModelPaths, max_tokens: usize, overlap: usize) -> Result<Self> {
        let path = models.tokenizer_dir.join("tokenizer.json");
        let mut tok = Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        // The sizer must count every token, not a truncated or padded sequence.
        tok.with_padding(None);
        tok.with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let config = || {
            ChunkConfig::new(max_tokens)
                .with_sizer(tok.clone())
                .with_overlap(overlap)
                .map_err(|e| Error::Tokenizer(format!("chunk_overlap: {e}")))
        };
        Ok(Chunker {
            markdown: MarkdownSplitter::new(config()?),
            text: TextSplitter::new(config()?),
            tokenizer: tok,
        })
    }

    /// Word pieces the embedding model reads for `text`: its tokens plus [CLS] and [SEP],
    /// capped at the model's limit, as ONNX Runtime sees them (used for throughput figures).
    pub fn model_tokens(&self, text: &str) -> usize {
        let n = self
            .tokenizer
            .encode_fast(text, false)
            .map(|e| e.len())
            .unwrap_or(0);
        (n + 2).min(crate::embed::MAX_TOKENS)
    }

    /// The chunks of `doc`, in order, each with its 1-based line span; in a paged document
    /// (PDF, PPTX) each page is split on its own, so a chunk's page is the page it cites.
    pub fn chunk<'a>(&self, doc: &'a Document) -> Vec<Chunk> {
        let lines = LineIndex::new(&doc.text);
        let mut bounds: Vec<usize> = doc
            .pages
            .iter()
            .filter_map(|&l| lines.start_of(l))
            .collect();
        bounds.extend([0, doc.text.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut pieces: Vec<(usize, &str)> = Vec::new();
        for w in bounds.windows(2) {
            let part = &doc.text[w[0]..w[1]];
            let at = |(offset, text): (usize, &'a str)| (w[0] + offset, text);
            if doc.markdown {
                pieces.extend(self.markdown.chunk_indices(part).map(at));
            } else {
                pieces.extend(self.text.chunk_indices(part).map(at));
            }
        }
        pieces
            .into_iter()
            .filter(|(_, t)| !t.trim().is_empty())
            .enumerate()
            .map(|(ord, (offset, text))| Chunk {
                ord: ord as u32,
                text: text.to_string(),
                start_line: lines.line_of(offset),
                end_line: lines.line_of(offset + text.len().saturating_sub(1)),
            })
            .collect()
    }
}

/// Byte offset → 1-based line number.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// The byte offset line `line` (1-based) starts at.
    fn start_of(&self, line: u32) -> Option<usize> {
        self.starts
            .get(usize::try_from(line).ok()?.checked_sub(1)?)
            .copied()
    }

    fn line_of(&self, offset: usize) -> u32 {
        // partition_point counts line starts at or before `offset`.
        self.starts.partition_point(|&s| s <= offset) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_is_one_based_and_inclusive() {
        let idx = LineIndex::new("ab\ncd\n\nef");
        assert_eq!(idx.line_of(0), 1);
        assert_eq!(idx.line_of(2), 1); // the newline belongs to its line
        assert_eq!(idx.line_of(3), 2);
        assert_eq!(idx.line_of(6), 3);
        assert_eq!(idx.line_of(7), 4);
        assert_eq!(idx.start_of(1), Some(0));
        assert_eq!(idx.start_of(4), Some(7));
        assert_eq!(idx.start_of(0), None);
        assert_eq!(idx.start_of(5), None);
    }

    #[test]
    fn doc_id_is_stable_and_short() {
        assert_eq!(doc_id(Path::new("/a/b.md")), doc_id(Path::new("/a/b.md")));
        assert_ne!(doc_id(Path::new("/a/b.md")), doc_id(Path::new("/a/c.md")));
        assert_eq!(doc_id(Path::new("/a/b.md")).len(), 16);
    }
}

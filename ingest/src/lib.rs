/*!
Turns files on disk into embedded chunks, ready to be stored.

`sovrag-ingest` owns the first half of the pipeline: walking a folder ([`walk`]), reading a
file defensively ([`load`]), reading PDF, HTML, DOCX, ODT, PPTX and EPUB documents in
isolated worker processes ([`extract`]), splitting its text along its structure to a token budget while
keeping 1-based line spans ([`chunk`]), and embedding text with all-MiniLM-L6-v2 through
fastembed and a dynamically loaded ONNX Runtime ([`embed`]). Model files are located and
checked by [`models`].

It does not store or search anything (that is `sovrag-retrieve`), and it never calls the
generator or the server: data flows one way, ingest → retrieve → generate → server.

```no_run
use sovrag_ingest::{chunk::Chunker, embed::Embedder, load, models::ModelPaths};
let models = ModelPaths::locate(None)?;
let chunker = Chunker::new(&models, 200, 40)?;
let embedder = Embedder::load(&models, None)?;
let doc = load::load_file(std::path::Path::new("notes.md"), 50 << 20)?;
let chunks = chunker.chunk(&doc);
let vectors = embedder.embed_documents(&chunks.iter().map(|c| c.embed_text(&doc.title)).collect::<Vec<_>>())?;
# Ok::<(), sovrag_ingest::Error>(())
```
*/
#![deny(missing_docs)]

pub mod chunk;
pub mod embed;
pub mod extract;
pub mod layout;
pub mod load;
pub mod models;
pub mod walk;

use std::path::PathBuf;

/// Everything that can go wrong while ingesting, with the path or model it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file is missing or unreadable; the message names the set-up command.
    #[error("{0}")]
    Models(String),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not something sovrag indexes (binary, empty, too large, not a regular
    /// file, or a document extraction failed on).
    #[error("skipped {path}: {reason}")]
    Skipped {
        /// The file.
        path: PathBuf,
        /// The kind of reason, for counting: `binary`, `empty`, `too large`,
        /// `not a regular file`, or an extraction [`Failure::reason`](extract::Failure::reason).
        kind: &'static str,
        /// Why, in words a user understands.
        reason: String,
    },
    /// The tokenizer could not be loaded or configured.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// ONNX Runtime or fastembed failed.
    #[error("embedding: {0}")]
    Embed(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Length of every embedding vector (all-MiniLM-L6-v2).
pub const EMBEDDING_DIM: usize = 384;

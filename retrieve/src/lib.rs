/*!
Stores chunks and finds them again: a LanceDB vector table, and tantivy BM25 indexes over
the same chunks and over the whole documents they come from, kept in step, searched together
and fused.

`sovrag-retrieve` owns the on-disk stores under a data dir (`lance/`, `tantivy/` and
`tantivy-docs/`), or a LanceDB table on S3-compatible object storage shared by a writer and
replicas, each with its own tantivy indexes ([`Storage`], [`Store::follow`], the writer
[`lease`], the store [`conformance`] check), the write path that keeps them in agreement
([`Store::apply`]), an
in-memory copy of the vectors for fast exact search, the audit of their invariants
([`Store::audit`]), and hybrid search ([`Store::search`]) ranking documents, then passages
([`fusion`]). It takes vectors and chunks from `sovrag-ingest`; it does not load files,
embed, or generate text.

Consistency rule: LanceDB is written first and is the record of what is indexed; tantivy (and
the in-memory copy) is derived from it. Every tantivy commit records, in the same atomic commit, the LanceDB table
version it matches. On open, a version that differs (a kill between the two writes, or any
write tantivy never saw) or a chunk count that differs makes tantivy be rebuilt from LanceDB,
which needs no re-embedding. A kill inside a LanceDB write leaves a file's chunks either old
or absent, never half-replaced; the caller's reconcile against the files on disk (the
content hash per path) re-indexes it.

```no_run
# async fn demo() -> sovrag_retrieve::Result<()> {
use sovrag_retrieve::{SearchMode, Store};
let store = Store::open(std::path::Path::new("/tmp/sovrag-data")).await?;
let query_vector = vec![0.0f32; 384]; // from sovrag_ingest::embed::Embedder::embed_query
let hits = store.search("how do I watch a folder", &query_vector, 5, SearchMode::default()).await?;
for h in hits { println!("{}:{}-{} {:.3}", h.path, h.start_line, h.end_line, h.score); }
# Ok(()) }
```
*/
#![deny(missing_docs)]

pub mod conformance;
pub mod fusion;
pub mod lease;
pub mod metrics;
mod resident;
mod schema;
mod storage;
mod text;
mod vector;

pub use storage::{S3Options, Storage};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use sovrag_ingest::EMBEDDING_DIM;
pub use sovrag_ingest::layout::Location;

/// Everything that can go wrong in the stores, with which store it was.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// LanceDB failed.
    #[error("vector store (LanceDB): {0}")]
    Lance(#[from] lancedb::Error),
    /// Arrow data did not have the expected shape.
    #[error("vector store (Arrow): {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// tantivy failed.
    #[error("text index (tantivy): {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// Another process holds the index for writing.
    #[error(
        "the index in {0} is being written by another sovrag process (stop it, or use another --data-dir)"
    )]
    Locked(String),
    /// Creating the data dir failed.
    #[error("data dir {path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A caller passed something unusable (e.g. a vector of the wrong length).
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// One chunk as stored: its text, where it came from, and its embedding.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    /// `doc_id:ord`, unique across the store.
    pub chunk_id: String,
    /// Stable id of the document (see `sovrag_ingest::chunk::doc_id`).
    pub doc_id: String,
    /// The file's path.
    pub path: String,
    /// The document title, indexed for BM25 with a boost.
    pub title: String,
    /// 1-based first line.
    pub start_line: u32,
    /// 1-based last line, inclusive.
    pub end_line: u32,
    /// The chunk text.
    pub text: String,
    /// sha256 of the whole file the chunk came from.
    pub content_hash: String,
    /// Unit-length embedding, [`EMBEDDING_DIM`] long.
    pub vector: Vec<f32>,
}

/// A search result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    /// The chunk's id (not part of the public JSON contract, but handy for callers).
    #[serde(skip)]
    pub chunk_id: String,
    /// Stable document id.
    pub doc_id: String,
    /// The file's path.
    pub path: String,
    /// 1-based first line.
    pub start_line: u32,
    /// 1-based last line, inclusive.
    pub end_line: u32,
    /// The chunk text.
    pub text: String,
    /// The fused score that ranks hits (higher is better).
    pub score: f32,
    /// BM25 score, when the text index found this chunk.
    pub bm25_score: Option<f32>,
    /// Cosine similarity, when the vector search found this chunk.
    pub vector_score: Option<f32>,
    /// The page and section the chunk is in, for documents that have them. The stores do
    /// not keep these: the caller fills them in from the document's layout.
    #[serde(flatten)]
    pub location: Location,
}

/// One change to the stores: a document's chunks replaced, or the document removed.
#[derive(Debug, Clone)]
pub enum Change {
    /// Replace every chunk of `path` by `chunks`.
    Replace {
        /// The document's path.
        path: String,
        /// Its new chunks, with vectors.
        chunks: Vec<ChunkRecord>,
    },
    /// Remove every chunk of `path`.
    Delete {
        /// The document's path.
        path: String,
    },
}

impl Change {
    /// The document this change concerns.
    pub fn path(&self) -> &str {
        match self {
            Change::Replace { path, .. } | Change::Delete { path } => path,
        }
    }
}

/// Which retrievers a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchMode {
    /// BM25 only.
    Bm25,
    /// Vectors only.
    Dense,
    /// Both, fused.
    Hybrid(fusion::Fusion),
}

impl Default for SearchMode {
    fn default() -> Self {
        SearchMode::Hybrid(fusion::Fusion::default())
    }
}

/// How many documents each retriever contributes before fusion (BM25 also as many chunks):
/// deep enough that a document ranked low by one side but high by the other still gets fused.
const CANDIDATES: usize = 100;

/// The two stores of one data dir.
pub struct Store {
    vectors: vector::VectorStore,
    /// Shared with the blocking thread a search runs BM25 on.
    text: std::sync::Arc<text::TextIndex>,
    /// The vectors again, in memory, for fast exact search (`None` above
    /// `resident::MAX_CHUNKS`); updated under `write_lock` after both stores are written.
    resident: std::sync::RwLock<Option<resident::Resident>>,
    // Writes to the two stores happen as one unit, one at a time, and a search never sees
    // one store updated and the other not.
    write_lock: tokio::sync::RwLock<()>,
    /// On object storage: `path → content_hash` of what the local indexes hold, which
    /// [`Store::follow`] compares with the table's latest version.
    followed: Option<std::sync::Mutex<HashMap<String, String>>>,
    /// The table version `followed` was last compared with (a concurrent writer's own
    /// commit can carry another writer's, so the version tantivy records is not enough).
    followed_version: std::sync::atomic::AtomicU64,
    /// Taken by [`Store::follow`] and [`Store::apply`]: a follow must not compare an older
    /// version with `followed` after this process's own write has moved it on.
    follow_lock: tokio::sync::Mutex<()>,
    follow_stats: std::sync::Mutex<FollowStats>,
}

/// Who opens a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Writes to it (creates it if absent).
    Writer,
    /// Only reads it (a replica, or a CLI query): never writes to a store on object storage.
    Reader,
}

/// How a node follows a table on object storage (see [`Store::follow`]).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FollowStats {
    /// The LanceDB table version the local indexes hold.
    pub version: u64,
    /// Chunks read from the table into the local indexes by catching up, since start (a
    /// rebuild reads them all).
    pub rows_applied: u64,
    /// Documents added, changed or removed by catching up, since start.
    pub documents_applied: u64,
    /// Full rebuilds of the local indexes (a cold start, or too far behind).
    pub rebuilds: u64,
    /// Checks of the table for a newer version, since start.
    pub checks: u64,
    /// Seconds since the last check (`None`: never, as for the only writer, which has no
    /// one else's commits to look for).
    pub checked_secs_ago: Option<f64>,
    #[serde(skip)]
    last_check: Option<Instant>,
}

/// What one [`Store::follow`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followed {
    /// The version now held.
    pub version: u64,
    /// Documents added, changed or removed.
    pub documents: usize,
    /// Chunks read from the table.
    pub rows: usize,
    /// Whether it rebuilt the local indexes rather than applying the difference.
    pub rebuilt: bool,
}

impl Store {
    /// Opens (creating if needed) the stores under `dir`, repairing tantivy from LanceDB if a
    /// crash left them disagreeing.
    pub async fn open(dir: &Path) -> Result<Self> {
        Self::open_at(&Storage::local(dir), Role::Writer).await
    }

    /// Opens the stores at `storage`. Its local folder's tantivy indexes are brought in line
    /// with LanceDB (rebuilt when they disagree: a crash between the two writes, or a node
    /// starting cold against object storage). A [`Role::Reader`] of object storage never
    /// writes there, and finds no table as an error.
    pub async fn open_at(storage: &Storage, role: Role) -> Result<Self> {
        let dir = storage.local_dir();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let create = role == Role::Writer || !storage.is_remote();
        let vectors = vector::VectorStore::open(storage, create).await?;
        let text = std::sync::Arc::new(text::TextIndex::open(
            &dir.join("tantivy"),
            &dir.join("tantivy-docs"),
        )?);
        let store = Store {
            vectors,
            text,
            resident: std::sync::RwLock::new(None),
            write_lock: tokio::sync::RwLock::new(()),
            followed: storage
                .is_remote()
                .then(|| std::sync::Mutex::new(HashMap::new())),
            followed_version: Default::default(),
            follow_lock: Default::default(),
            follow_stats: Default::default(),
        };
        // One read of every chunk serves the in-memory copy and, when needed, the repair.
        let in_lance = store.vectors.count().await?;
        let all = if in_lance <= resident::MAX_CHUNKS {
            Some(store.vectors.all_chunks().await?)
        } else {
            None
        };
        *store.resident_mut() = all.as_deref().map(resident::Resident::from_chunks);
        // A node of a shared table whose own indexes hold an older version catches up from
        // it, if that version's files are still in the store; else, as a local store does,
        // it rebuilds them when they disagree with the table.
        if store.followed.is_some()
            && store.text.count() > 0
            && let Some(held) = store.text.synced_version()
            && let Ok(documents) = store.vectors.documents_at_version(held).await
        {
            store.hold(documents, held);
            store.follow().await?;
            return Ok(store);
        }
        let rebuilt = store.repair_if_needed(in_lance, all.as_deref()).await?;
        if store.followed.is_some() {
            let documents = match &all {
                Some(all) => all
                    .iter()
                    .map(|c| (c.path.clone(), c.content_hash.clone()))
                    .collect(),
                None => store.vectors.documents().await?,
            };
            store.hold(documents, store.vectors.version().await?);
            store.follow_stats().rebuilds += u64::from(rebuilt);
        }
        Ok(store)
    }

    fn follow_stats(&self) -> std::sync::MutexGuard<'_, FollowStats> {
        self.follow_stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How this node has followed the table (all zero for a local store).
    pub fn following(&self) -> FollowStats {
        let mut f = self.follow_stats().clone();
        f.checked_secs_ago = f.last_check.map(|t| t.elapsed().as_secs_f64());
        f
    }

    /// Records that the local indexes hold `documents` (`path → content_hash`) as of table
    /// `version`: what the next [`Store::follow`] compares the newest version with.
    fn hold(&self, documents: HashMap<String, String>, version: u64) {
        if let Some(followed) = &self.followed {
            *followed.lock().unwrap_or_else(|e| e.into_inner()) = documents;
            self.followed_version.store(version, Ordering::SeqCst);
            self.follow_stats().version = version;
        }
    }

    /// Brings the local indexes up to the newest version of a table on object storage that
    /// other nodes write: the documents whose content hash differs between what the local
    /// indexes hold and that version are re-read and replaced, the ones gone removed. A node
    /// too far behind (over half its documents changed) rebuilds instead. Nothing for a
    /// local store, whose only writer is this process.
    pub async fn follow(&self) -> Result<Followed> {
        let Some(followed) = &self.followed else {
            return Ok(Followed::default());
        };
        let _f = self.follow_lock.lock().await;
        self.vectors.checkout_latest().await?;
        let version = self.vectors.version().await?;
        {
            let mut stats = self.follow_stats();
            stats.checks += 1;
            stats.last_check = Some(Instant::now());
        }
        if self.followed_version.load(Ordering::SeqCst) == version {
            return Ok(Followed {
                version,
                ..Default::default()
            });
        }
        // Reads come from the version just checked out, so they agree with each other
        // even while the writer commits the next one.
        let latest = self.vectors.documents().await?;
        let (changed, removed) = {
            let held = followed.lock().unwrap_or_else(|e| e.into_inner());
            let changed: Vec<String> = latest
                .iter()
                .filter(|(p, h)| held.get(*p) != Some(*h))
                .map(|(p, _)| p.clone())
                .collect();
            let removed: Vec<String> = held
                .keys()
                .filter(|p| !latest.contains_key(*p))
                .cloned()
                .collect();
            (changed, removed)
        };
        let documents = changed.len() + removed.len();
        let _w = self.write_lock.write().await;
        let (rows, rebuilt) = if documents * 2 > latest.len().max(16) {
            let all = self.vectors.all_chunks().await?;
            self.text.rebuild(&all, version)?;
            *self.resident_mut() =
                (all.len() <= resident::MAX_CHUNKS).then(|| resident::Resident::from_chunks(&all));
            (all.len(), true)
        } else {
            let paths: Vec<&str> = changed.iter().chain(&removed).map(String::as_str).collect();
            let names: Vec<&str> = changed.iter().map(String::as_str).collect();
            let chunks = if names.is_empty() {
                Vec::new()
            } else {
                self.vectors.chunks_of(&names, &[]).await?
            };
            self.text.replace(&paths, &chunks, version)?;
            if let Some(r) = self.resident_mut().as_mut() {
                r.replace(&paths, &chunks);
            }
            (chunks.len(), false)
        };
        self.hold(latest, version);
        let mut stats = self.follow_stats();
        stats.rows_applied += rows as u64;
        stats.documents_applied += documents as u64;
        stats.rebuilds += u64::from(rebuilt);
        Ok(Followed {
            version,
            documents,
            rows,
            rebuilt,
        })
    }

    /// Rebuilds tantivy from `all` (read from LanceDB if not given) when it does not match
    /// LanceDB's version and chunk count `in_lance`.
    /// Returns whether it rebuilt.
    async fn repair_if_needed(&self, in_lance: usize, all: Option<&[ChunkRecord]>) -> Result<bool> {
        let _w = self.write_lock.write().await;
        let version = self.vectors.version().await?;
        let in_tantivy = self.text.count();
        let synced = self.text.synced_version();
        if in_lance == in_tantivy && synced == Some(version) {
            return Ok(false);
        }
        let read;
        let all = match all {
            Some(all) => all,
            None => {
                read = self.vectors.all_chunks().await?;
                &read
            }
        };
        match self.text.rebuild(all, version) {
            Ok(()) if in_lance + in_tantivy == 0 => Ok(false), // a new, empty store
            Ok(()) if self.followed.is_some() => {
                tracing::info!(
                    "built the local text index from version {version} of the shared table ({in_lance} chunks)"
                );
                Ok(true)
            }
            Ok(()) => {
                tracing::warn!(
                    "text index was behind the vector store (version {synced:?} vs {version}, {in_tantivy} vs {in_lance} chunks): rebuilt it from the vector store"
                );
                Ok(true)
            }
            // Another process is writing: it is the one that brings tantivy in line, and a
            // reader must not fail because it looked between that writer's two commits.
            Err(Error::Locked(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `path → content_hash` of every indexed document.
    pub async fn documents(&self) -> Result<HashMap<String, String>> {
        self.vectors.documents().await
    }

    /// `path → content_hash` of those of `paths` that are indexed.
    pub async fn documents_at(&self, paths: &[&str]) -> Result<HashMap<String, String>> {
        if paths.is_empty() {
            return Ok(HashMap::new());
        }
        // From the in-memory copy when there is one: this is on the search path.
        let in_memory = self
            .resident
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| {
                paths
                    .iter()
                    .filter_map(|&p| Some((p.to_owned(), r.hash_of(p)?.to_owned())))
                    .collect()
            });
        match in_memory {
            Some(found) => Ok(found),
            None => self.vectors.documents_at(paths).await,
        }
    }

    /// Every chunk of the document `doc_id`, by line; empty if it is not indexed.
    pub async fn document(&self, doc_id: &str) -> Result<Vec<ChunkRecord>> {
        self.vectors.chunks_of_document(doc_id).await
    }

    /// Stored chunks of the documents at `paths` or with content `hashes`: their vectors can
    /// be reused when an edited or moved file still holds the same chunk text.
    pub async fn chunks_of(&self, paths: &[&str], hashes: &[&str]) -> Result<Vec<ChunkRecord>> {
        if paths.is_empty() && hashes.is_empty() {
            return Ok(Vec::new());
        }
        let _r = self.write_lock.read().await;
        self.vectors.chunks_of(paths, hashes).await
    }

    /// Number of (documents, chunks) stored.
    pub async fn counts(&self) -> Result<(usize, usize)> {
        // A node of a shared table counts what its own indexes hold (the version it serves)
        // rather than scan the table in the bucket on every status request.
        if let Some(followed) = &self.followed {
            let documents = followed.lock().unwrap_or_else(|e| e.into_inner()).len();
            return Ok((documents, self.text.count()));
        }
        Ok((
            self.vectors.documents().await?.len(),
            self.vectors.count().await?,
        ))
    }

    /// Applies a batch of document changes as one write to each store.
    ///
    /// Batching matters: every LanceDB write is a new table version and every tantivy
    /// commit an fsync, so indexing a folder one file at a time would be slow.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        for c in &changes {
            if let Change::Replace { chunks, .. } = c
                && let Some(bad) = chunks.iter().find(|c| c.vector.len() != EMBEDDING_DIM)
            {
                return Err(Error::Invalid(format!(
                    "chunk {} has a {}-dim vector, expected {EMBEDDING_DIM}",
                    bad.chunk_id,
                    bad.vector.len()
                )));
            }
        }
        // The last change to a path wins: two replacements of one document in a batch must
        // not leave both sets of chunks behind.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, c) in changes.iter().enumerate() {
            last.insert(c.path(), i);
        }
        let changes: Vec<&Change> = changes
            .iter()
            .enumerate()
            .filter(|(i, c)| last[c.path()] == *i)
            .map(|(_, c)| c)
            .collect();
        let paths: Vec<&str> = changes.iter().map(|c| c.path()).collect();
        let chunks: Vec<ChunkRecord> = changes
            .iter()
            .filter_map(|c| match *c {
                Change::Replace { chunks, .. } => Some(chunks.iter().cloned()),
                Change::Delete { .. } => None,
            })
            .flatten()
            .collect();
        let _f = match self.followed {
            Some(_) => Some(self.follow_lock.lock().await),
            None => None,
        };
        let _w = self.write_lock.write().await;
        // Only stored paths need deleting from LanceDB, and each delete scans the table: a
        // batch of new files (the whole of a first index) skips it. The in-memory copy
        // knows every stored path; without it, delete them all.
        let stored: Vec<&str> = match self
            .resident
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(r) => paths.iter().copied().filter(|p| r.has_path(p)).collect(),
            None => paths.clone(),
        };
        // LanceDB first: it is the record; tantivy follows (see the crate doc).
        if let Err(e) = self.vectors.replace(&stored, &chunks).await {
            // The in-memory copy must keep mirroring what LanceDB holds, half-write or not.
            self.load_resident().await?;
            return Err(e);
        }
        {
            let mut resident = self.resident_mut();
            if let Some(r) = resident.as_mut() {
                r.replace(&paths, &chunks);
                if r.len() > resident::MAX_CHUNKS {
                    tracing::info!(
                        "over {} chunks: vector search now reads LanceDB instead of a copy in memory",
                        resident::MAX_CHUNKS
                    );
                    *resident = None;
                }
            }
        }
        let version = self.vectors.version().await?;
        self.text.replace(&paths, &chunks, version)?;
        if let Some(followed) = &self.followed {
            let mut held = followed.lock().unwrap_or_else(|e| e.into_inner());
            for p in &paths {
                held.remove(*p);
            }
            for c in &chunks {
                held.insert(c.path.clone(), c.content_hash.clone());
            }
            self.follow_stats().version = version;
        }
        Ok(())
    }

    /// (Re)loads the in-memory copy of the vectors from LanceDB, if the store is small enough.
    async fn load_resident(&self) -> Result<()> {
        let copy = if self.vectors.count().await? <= resident::MAX_CHUNKS {
            Some(resident::Resident::from_chunks(
                &self.vectors.all_chunks().await?,
            ))
        } else {
            None
        };
        *self.resident_mut() = copy;
        Ok(())
    }

    fn resident_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<resident::Resident>> {
        // The copy is only written whole-row at a time; a panic elsewhere cannot tear it.
        self.resident.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored chunk, and every way the stores break their own invariants: a chunk id
    /// twice, a path with chunks of two contents, a vector of the wrong length, tantivy and
    /// LanceDB holding different chunks, or tantivy not committed against LanceDB's version.
    pub async fn audit(&self) -> Result<Audit> {
        let _r = self.write_lock.read().await;
        let chunks = self.vectors.all_chunks().await?;
        let mut violations = Vec::new();
        let mut ids = HashSet::new();
        let mut hash_of: HashMap<&str, &str> = HashMap::new();
        for c in &chunks {
            if !ids.insert(c.chunk_id.as_str()) {
                violations.push(format!("chunk {} is stored twice", c.chunk_id));
            }
            if c.vector.len() != EMBEDDING_DIM {
                violations.push(format!(
                    "chunk {} has a {}-dim vector",
                    c.chunk_id,
                    c.vector.len()
                ));
            }
            let h = hash_of
                .entry(c.path.as_str())
                .or_insert(c.content_hash.as_str());
            if *h != c.content_hash {
                violations.push(format!("{} has chunks of two different contents", c.path));
            }
        }
        let mut in_text = HashSet::new();
        for id in self.text.chunk_ids()? {
            if !ids.contains(id.as_str()) {
                violations.push(format!(
                    "text index has chunk {id}, the vector store does not"
                ));
            }
            if !in_text.insert(id.clone()) {
                violations.push(format!("text index has chunk {id} twice"));
            }
        }
        for id in ids.iter().filter(|id| !in_text.contains(**id)) {
            violations.push(format!(
                "vector store has chunk {id}, the text index does not"
            ));
        }
        let version = self.vectors.version().await?;
        if self.text.synced_version() != Some(version) {
            violations.push(format!(
                "text index was committed against vector store version {:?}, which is now {version}",
                self.text.synced_version()
            ));
        }
        Ok(Audit { chunks, violations })
    }

    /// Housekeeping after writes: compacts the vector store when writes have fragmented it
    /// (see `VectorStore::compact`), keeps its vector index once it is past the in-memory
    /// copy's size (`VectorStore::index_vectors`), and after compaction or a `bulk` run (many
    /// writes at once) merges each text index into one segment. Returns whether anything was
    /// done.
    ///
    /// The merge rewrites the whole text index, so it waits for one of those two moments:
    /// a bulk run leaves a segment per batch (a search visits each one), and compaction
    /// comes only after many small writes. A watcher sync of a few files does not merge;
    /// tantivy's own merge policy keeps its segments in check in between.
    pub async fn maintain(&self, bulk: bool) -> Result<bool> {
        let _w = self.write_lock.write().await;
        let compacted = self.vectors.compact().await?;
        // Past the in-memory copy's size, vector searches go to LanceDB: an index keeps
        // them fast (after compaction, which would otherwise rewrite it at once).
        let indexed = self.vectors.index_vectors(resident::MAX_CHUNKS).await?;
        let fragmented_text = bulk && self.text.segments() > 1;
        if !compacted && !fragmented_text {
            return Ok(indexed != vector::IndexAction::None);
        }
        // Compaction is a new LanceDB version with the same chunks; a merge keeps the
        // version. Either way both indexes record the version they match.
        let version = self.vectors.version().await?;
        self.text.merge_segments(version)?;
        if self.followed.is_some() {
            self.follow_stats().version = version;
        }
        Ok(true)
    }

    /// The `k` best chunks for a query, by the chosen retrievers.
    ///
    /// `query_vector` must be the query's embedding (ignored in [`SearchMode::Bm25`]).
    pub async fn search(
        &self,
        query: &str,
        query_vector: &[f32],
        k: usize,
        mode: SearchMode,
    ) -> Result<Vec<Hit>> {
        let v = std::future::ready(Ok(query_vector.to_vec()));
        Ok(self.search_timed(query, v, k, mode).await?.0)
    }

    /// [`Store::search`], also reporting how long each stage took.
    ///
    /// The query vector is a future so that its embedding (on another thread) overlaps the
    /// BM25 search, which does not need it; it is not awaited in [`SearchMode::Bm25`].
    pub async fn search_timed(
        &self,
        query: &str,
        query_vector: impl std::future::Future<Output = Result<Vec<f32>>>,
        k: usize,
        mode: SearchMode,
    ) -> Result<(Vec<Hit>, StageTimes)> {
        let mut times = StageTimes::default();
        if k == 0 {
            return Ok((Vec::new(), times));
        }
        let depth = CANDIDATES.max(k);
        let _r = self.write_lock.read().await;
        // BM25 runs on threads of its own while this task waits for the query's embedding
        // and searches the vectors: at a million chunks each side takes 25-40 ms.
        let keywords = (mode != SearchMode::Dense).then(|| {
            let text = self.text.clone();
            let query = query.to_owned();
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                // The chunk and document indexes are searched at once: at a million chunks
                // each takes about 25 ms, and this thread would otherwise wait out both.
                // A panic there is passed on, to end this task as any BM25 panic does.
                let (chunks, docs) = std::thread::scope(|s| {
                    let docs = s.spawn(|| text.search_docs(&query, depth));
                    let chunks = text.search(&query, depth);
                    (
                        chunks,
                        docs.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                    )
                });
                let found = (chunks?, docs?);
                Ok::<_, Error>((found, t.elapsed()))
            })
        });
        let t = Instant::now();
        let dense = if mode != SearchMode::Bm25 {
            let query_vector = query_vector.await?;
            let t = Instant::now();
            if query_vector.len() != EMBEDDING_DIM {
                return Err(Error::Invalid(format!(
                    "query vector has {} dims, expected {EMBEDDING_DIM}",
                    query_vector.len()
                )));
            }
            let hits = self.vector_candidates(&query_vector, depth).await?;
            times.vector = t.elapsed();
            hits
        } else {
            Vec::new()
        };
        times.wait = t.elapsed() - times.vector;
        let (bm25, bm25_docs) = match keywords {
            Some(task) => {
                let (found, took) = task
                    .await
                    .map_err(|e| Error::Invalid(format!("BM25 search stopped: {e}")))??;
                times.bm25 = took;
                found
            }
            None => (Vec::new(), Vec::new()),
        };
        let t = Instant::now();
        let mut hits = fusion::rank(bm25, bm25_docs, dense, mode, depth);
        hits.truncate(k);
        // A document that only the document index found: show its best-matching chunk.
        let wanted: Vec<&str> = hits
            .iter()
            .filter(|h| h.chunk_id.is_empty())
            .map(|h| h.doc_id.as_str())
            .collect();
        let mut found = self.text.best_chunks_of(&wanted, query)?;
        for h in hits.iter_mut().filter(|h| h.chunk_id.is_empty()) {
            if let Some(c) = found.remove(&h.doc_id) {
                *h = Hit {
                    score: h.score,
                    vector_score: h.vector_score,
                    ..c
                };
            }
        }
        hits.retain(|h| !h.chunk_id.is_empty());
        // Vector hits carry no text (nor, from LanceDB, path and lines): take them from
        // tantivy for the few kept. A chunk it does not hold yet (the text index trails the
        // table for a moment on a replica) cannot be shown: it is left out.
        let unknown = self.text.fill_hits(&mut hits)?;
        if !unknown.is_empty() {
            hits.retain(|h| !unknown.contains(&h.chunk_id));
        }
        times.fusion = t.elapsed();
        Ok((hits, times))
    }

    /// The best chunks by cosine, down to the best chunk of the `docs`-th document: the vector
    /// side's `docs` best documents, as many as BM25's document index contributes, so both
    /// sides of the fusion rank the same number of documents. A fixed number of chunks would
    /// cover fewer documents the more chunks each has.
    async fn vector_candidates(&self, query: &[f32], docs: usize) -> Result<Vec<Hit>> {
        // Start at two chunks per document, which usually covers them; double until it does.
        let mut limit = 2 * docs;
        loop {
            let in_memory = self
                .resident
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|r| r.search(query, limit));
            let mut hits = match in_memory {
                Some(hits) => hits,
                None => self.vectors.search(query, limit).await?,
            };
            let exhausted = hits.len() < limit;
            let mut seen = HashSet::new();
            if let Some(cut) = hits
                .iter()
                .position(|h| seen.insert(h.doc_id.as_str()) && seen.len() > docs)
            {
                hits.truncate(cut);
                return Ok(hits);
            }
            if exhausted {
                return Ok(hits);
            }
            limit *= 2;
        }
    }
}

/// What [`Store::audit`] found.
#[derive(Debug)]
pub struct Audit {
    /// Every chunk in the vector store.
    pub chunks: Vec<ChunkRecord>,
    /// Each broken invariant, in one line.
    pub violations: Vec<String>,
}

/// Time spent in each stage of one search.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// tantivy BM25.
    pub bm25: Duration,
    /// Vector search (in memory, or LanceDB for stores over 250,000 chunks).
    pub vector: Duration,
    /// Waiting for the query embedding before the vector search (BM25 runs meanwhile, on
    /// another thread).
    pub wait: Duration,
    /// Fusion, and fetching the kept hits' texts.
    pub fusion: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit vector pointing mostly along axis `i`: distinct, deterministic embeddings
    /// without a model, so these tests exercise the real stores only.
    fn axis(i: usize) -> Vec<f32> {
        let mut v = vec![0.01f32; EMBEDDING_DIM];
        v[i] = 1.0;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn chunk(path: &str, ord: u32, text: &str, dir: usize) -> ChunkRecord {
        ChunkRecord {
            chunk_id: format!("{path}:{ord}"),
            doc_id: path.into(),
            path: path.into(),
            title: String::new(),
            start_line: ord + 1,
            end_line: ord + 1,
            text: text.into(),
            content_hash: format!("h-{path}"),
            vector: axis(dir),
        }
    }

    /// A change storing `path` as chunks of (ordinal, text, the axis of its vector).
    fn put(path: &str, chunks: &[(u32, &str, usize)]) -> Change {
        Change::Replace {
            path: path.into(),
            chunks: chunks
                .iter()
                .map(|&(ord, text, dir)| chunk(path, ord, text, dir))
                .collect(),
        }
    }

    /// The in-memory copy ranks exactly as LanceDB's own search does, and knows the same
    /// documents by the same content hashes.
    async fn memory_matches_lance(store: &Store) {
        let in_lance = store.vectors.documents().await.unwrap();
        let mut paths: Vec<&str> = in_lance.keys().map(String::as_str).collect();
        paths.push("never-indexed.md");
        assert_eq!(store.documents_at(&paths).await.unwrap(), in_lance);
        for dir in [1, 2, 3, 4, 5, 9] {
            let lance = store.vectors.search(&axis(dir), 10).await.unwrap();
            let memory = store
                .resident
                .read()
                .unwrap()
                .as_ref()
                .unwrap()
                .search(&axis(dir), 10);
            assert_eq!(lance.len(), memory.len());
            // Same scores rank by rank, and each chunk the same score in both (chunks that
            // tie may come in either order: the two compute cosines in different orders).
            for (l, m) in lance.iter().zip(&memory) {
                assert!(
                    (l.score - m.score).abs() < 1e-4,
                    "{} vs {}",
                    l.score,
                    m.score
                );
                let same = lance.iter().find(|x| x.chunk_id == m.chunk_id).unwrap();
                assert!((same.score - m.score).abs() < 1e-4);
                assert_eq!(same.doc_id, m.doc_id);
            }
        }
    }

    /// Above the in-memory copy's size, vector hits come from LanceDB as ids and scores; the
    /// store fills in path, lines and text from tantivy, so a search answers the same, field
    /// for field, as it does from memory.
    #[tokio::test(flavor = "multi_thread")]
    async fn searches_from_lance_fill_in_what_lance_does_not_return() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store
            .apply(vec![
                put("a.md", &[(0, "owls hunt at dusk", 1)]),
                put(
                    "b.md",
                    &[
                        (0, "wrens sing in the hedge", 2),
                        (4, "gulls follow the boats", 3),
                    ],
                ),
            ])
            .await
            .unwrap();
        let ask = |dir: usize, mode| {
            let v = axis(dir);
            let store = &store;
            async move { store.search("gulls boats", &v, 3, mode).await }
        };
        let mut from_memory = Vec::new();
        for (dir, mode) in [(3, SearchMode::Dense), (1, SearchMode::default())] {
            from_memory.push(ask(dir, mode).await.unwrap());
        }
        assert_eq!(from_memory[0][0].path, "b.md");
        assert_eq!(from_memory[0][0].start_line, 5);
        assert_eq!(from_memory[0][0].text, "gulls follow the boats");
        *store.resident_mut() = None;
        for ((dir, mode), memory) in [(3, SearchMode::Dense), (1, SearchMode::default())]
            .into_iter()
            .zip(&from_memory)
        {
            let lance = ask(dir, mode).await.unwrap();
            let fields = |hits: &[Hit]| -> Vec<(String, String, u32, u32, String)> {
                hits.iter()
                    .map(|h| {
                        let (c, p, t) = (h.chunk_id.clone(), h.path.clone(), h.text.clone());
                        (c, p, h.start_line, h.end_line, t)
                    })
                    .collect()
            };
            assert_eq!(fields(&lance), fields(memory), "{mode:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn vector_candidates_cover_as_many_documents_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        // long.md's five chunks are the nearest to axis 1; then d0..d3, each farther.
        let near = |path: &str, ord: u32, weight: f32| {
            let mut v = axis(10 + ord as usize);
            v[1] += weight;
            ChunkRecord {
                vector: v,
                ..chunk(path, ord, "text", 0)
            }
        };
        let mut changes = vec![Change::Replace {
            path: "long.md".into(),
            chunks: (0..5).map(|i| near("long.md", i, 9.0)).collect(),
        }];
        for (i, w) in [4.0, 3.0, 2.0, 1.0].into_iter().enumerate() {
            let path = format!("d{i}.md");
            changes.push(Change::Replace {
                chunks: vec![near(&path, 0, w)],
                path,
            });
        }
        store.apply(changes).await.unwrap();
        // Three documents: six chunks (two per document) hold only two, so it fetches more.
        let hits = store.vector_candidates(&axis(1), 3).await.unwrap();
        let docs: Vec<&str> = hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(
            docs,
            [
                "long.md", "long.md", "long.md", "long.md", "long.md", "d0.md", "d1.md"
            ]
        );
        // More documents than the store has: all of it.
        assert_eq!(
            store.vector_candidates(&axis(1), 50).await.unwrap().len(),
            9
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn write_search_replace_delete_and_repair() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        store
            .apply(vec![
                put("a.md", &[(0, "watching folders keeps them in sync", 1)]),
                put(
                    "b's.md",
                    &[
                        (0, "install the models first", 2),
                        (1, "then build with cargo", 3),
                    ],
                ),
            ])
            .await
            .unwrap();
        assert_eq!(store.counts().await.unwrap(), (2, 3));

        // Two replacements of one path in a batch: only the last one's chunks remain.
        store
            .apply(vec![
                Change::Replace {
                    path: "c.md".into(),
                    chunks: vec![chunk("c.md", 0, "first version", 5)],
                },
                Change::Replace {
                    path: "c.md".into(),
                    chunks: vec![chunk("c.md", 0, "second version", 5)],
                },
            ])
            .await
            .unwrap();
        assert_eq!(store.counts().await.unwrap(), (3, 4));
        memory_matches_lance(&store).await;
        store
            .apply(vec![Change::Delete {
                path: "c.md".into(),
            }])
            .await
            .unwrap();
        memory_matches_lance(&store).await;

        let hits = store
            .search("watch", &axis(9), 5, SearchMode::Bm25)
            .await
            .unwrap();
        assert_eq!(hits[0].path, "a.md", "stemming: watch ~ watching");
        let hits = store
            .search("", &axis(3), 1, SearchMode::Dense)
            .await
            .unwrap();
        assert_eq!(hits[0].chunk_id, "b's.md:1");
        assert!(hits[0].vector_score.unwrap() > 0.9);
        let hits = store
            .search("models", &axis(2), 3, SearchMode::default())
            .await
            .unwrap();
        assert_eq!(hits[0].chunk_id, "b's.md:0");
        assert!(hits[0].bm25_score.is_some() && hits[0].vector_score.is_some());

        // Replacing drops the old text everywhere; a quote in the path is no SQL problem.
        store
            .apply(vec![Change::Replace {
                path: "b's.md".into(),
                chunks: vec![chunk("b's.md", 0, "completely new words", 4)],
            }])
            .await
            .unwrap();
        assert!(
            store
                .search("models", &axis(2), 5, SearchMode::Bm25)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.counts().await.unwrap(), (2, 2));
        memory_matches_lance(&store).await;
        let hits = store
            .search("", &axis(4), 1, SearchMode::Dense)
            .await
            .unwrap();
        assert_eq!(hits[0].text, "completely new words", "text of a vector hit");
        store
            .apply(vec![Change::Delete {
                path: "a.md".into(),
            }])
            .await
            .unwrap();
        assert_eq!(store.documents().await.unwrap().len(), 1);
        assert!(
            store
                .search("watching", &axis(1), 5, SearchMode::Bm25)
                .await
                .unwrap()
                .is_empty()
        );

        // A kill between the LanceDB write and the tantivy commit, in a replacement that
        // keeps the chunk count: the next open must still notice and catch tantivy up.
        store
            .vectors
            .replace(&["b's.md"], &[chunk("b's.md", 0, "kingfishers dive", 4)])
            .await
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).await.unwrap();
        let bm25 = |q: &'static str| {
            let store = &store;
            async move {
                store
                    .search(q, &axis(4), 5, SearchMode::Bm25)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(bm25("kingfishers").await.len(), 1, "new text found");
        assert!(
            bm25("completely new words").await.is_empty(),
            "stale text gone"
        );
        assert_eq!(store.counts().await.unwrap(), (1, 1));
        drop(store);

        // A text index written with other fields (another sovrag version) is rebuilt.
        let docs_dir = dir.path().join("tantivy-docs");
        std::fs::remove_dir_all(&docs_dir).unwrap();
        std::fs::create_dir_all(&docs_dir).unwrap();
        let mut b = tantivy::schema::Schema::builder();
        b.add_text_field("unrelated", tantivy::schema::TEXT);
        tantivy::Index::create_in_dir(&docs_dir, b.build()).unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let hits = store
            .search("kingfishers", &axis(4), 5, SearchMode::Bm25)
            .await
            .unwrap();
        assert_eq!(
            hits.len(),
            1,
            "document index rebuilt after a layout change"
        );
        drop(store);

        // A crash between the two writes leaves tantivy behind: simulate by wiping it.
        std::fs::remove_dir_all(dir.path().join("tantivy")).unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let hits = store
            .search("kingfishers", &axis(4), 5, SearchMode::Bm25)
            .await
            .unwrap();
        assert_eq!(hits.len(), 1, "text index rebuilt from the vector store");
    }

    /// Deterministic vectors in 40 clusters, so that an IVF index has structure to learn.
    fn clustered(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        (0..n)
            .map(|i| {
                let mut v: Vec<f32> = (0..EMBEDDING_DIM).map(|_| next() * 0.3).collect();
                v[i % 40] += 1.0;
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_vector_index_is_built_extended_and_searched_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = vector::VectorStore::open(&Storage::local(dir.path()), true)
            .await
            .unwrap();
        // Stores `vectors` as documents d{from}.md, d{from+1}.md, …
        let put = |vectors: &[Vec<f32>], from: usize| {
            let chunks: Vec<ChunkRecord> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| ChunkRecord {
                    vector: v.clone(),
                    ..chunk(&format!("d{}.md", from + i), 0, "text", 0)
                })
                .collect();
            let store = &store;
            async move {
                let paths: Vec<&str> = chunks.iter().map(|c| c.path.as_str()).collect();
                store.replace(&paths, &chunks).await.unwrap();
            }
        };
        let first = clustered(2000, 1);
        put(&first, 0).await;
        assert_eq!(
            store.index_vectors(5000).await.unwrap(),
            vector::IndexAction::None,
            "below its threshold"
        );
        assert!(!store.has_vector_index().await.unwrap());
        let exact: Vec<Vec<String>> = {
            let mut out = Vec::new();
            for v in first.iter().take(20) {
                let hits = store.search(v, 10).await.unwrap();
                out.push(hits.into_iter().map(|h| h.chunk_id).collect());
            }
            out
        };
        assert_eq!(
            store.index_vectors(1000).await.unwrap(),
            vector::IndexAction::Built
        );
        assert!(store.has_vector_index().await.unwrap());
        let mut found = 0;
        for (i, v) in first.iter().take(20).enumerate() {
            let hits = store.search(v, 10).await.unwrap();
            assert_eq!(
                hits[0].chunk_id,
                format!("d{i}.md:0"),
                "a stored vector finds itself first"
            );
            found += hits
                .iter()
                .filter(|h| exact[i].contains(&h.chunk_id))
                .count();
        }
        assert!(found >= 190, "recall@10 against exact search: {found}/200");
        assert_eq!(
            store.index_vectors(1000).await.unwrap(),
            vector::IndexAction::None
        );

        // New rows are found before and after they join the index.
        let more = clustered(500, 2);
        put(&more, 2000).await;
        assert_eq!(
            store.search(&more[7], 1).await.unwrap()[0].chunk_id,
            "d2007.md:0"
        );
        assert_eq!(
            store.index_vectors(1000).await.unwrap(),
            vector::IndexAction::Extended
        );
        assert_eq!(
            store.search(&more[7], 1).await.unwrap()[0].chunk_id,
            "d2007.md:0"
        );
        assert_eq!(
            store.index_vectors(1000).await.unwrap(),
            vector::IndexAction::None
        );

        // More new rows than the index was trained on: it is trained again.
        put(&clustered(3000, 3), 2500).await;
        assert_eq!(
            store.index_vectors(1000).await.unwrap(),
            vector::IndexAction::Built
        );
        assert_eq!(
            store.search(&more[7], 1).await.unwrap()[0].chunk_id,
            "d2007.md:0"
        );
    }
}

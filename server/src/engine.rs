//! The one place where ingest, retrieve and generate are put together: every entry point
//! (CLI, HTTP, watcher) goes through an [`Engine`], so they all index and search alike.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use sovrag_generate::Generator;
use sovrag_ingest::chunk::{Chunker, doc_id, embed_text};
use sovrag_ingest::embed::Embedder;
use sovrag_ingest::extract::{Extractor, Isolation, Limits};
use sovrag_ingest::models::ModelPaths;
use sovrag_ingest::{load, walk};
use sovrag_retrieve::{Change, ChunkRecord, Hit, SearchMode, StageTimes, Store};

use crate::config::Config;

mod answer;
mod documents;
mod models;
mod verify;
pub use answer::passage;
pub use documents::DocumentText;
pub use models::{ModelInfo, UnknownModel};

/// Where the problems of the last runs are kept, in the data dir.
const PROBLEMS_FILE: &str = "problems.json";

/// Files read, chunked and embedded per write to the stores.
const FILES_PER_BATCH: usize = 64;
/// In-memory documents embedded per write to the stores.
const DOCS_PER_BATCH: usize = 512;

pub struct Engine {
    pub config: Config,
    models: ModelPaths,
    /// Loaded on first use: `status` and `verify` never need it.
    embedder: tokio::sync::OnceCell<Arc<Embedder>>,
    chunker: Arc<Chunker>,
    /// Reads PDFs and office documents in worker processes (`sovrag __extract-worker`).
    extractor: Arc<Extractor>,
    store: Store,
    /// The generators held loaded with their GGUFs, most recently used last (see `models`).
    generator: tokio::sync::Mutex<Vec<(PathBuf, Arc<Generator>)>>,
    /// Last problem seen per path (skipped or failed files), for `status`; kept in
    /// [`PROBLEMS_FILE`] so a `status` after an `index` run still lists them.
    problems: Mutex<BTreeMap<String, String>>,
    /// What the engine is busy with, for `status`.
    activity: Mutex<Activity>,
    /// Pages and headings of extracted documents, by content hash (`None`: not kept).
    layouts: Mutex<HashMap<String, Option<Arc<sovrag_ingest::layout::Layout>>>>,
    /// How each watched folder is being followed, for `status`.
    watching: Mutex<BTreeMap<String, String>>,
    /// Where answers are kept for feedback and fine-tuning (written only with
    /// `config.answer_log` on).
    pub answers: crate::answers::AnswerLog,
}

/// Work in progress: counted while a [`WorkGuard`] lives.
#[derive(Debug, Default)]
struct Activity {
    syncs: usize,
    reconciles: usize,
    /// Changed paths the watcher has taken in and not yet applied.
    queued: usize,
    /// Files done and total of the indexing run in progress.
    progress: Option<(usize, usize)>,
}

/// The kinds of work a watcher reports.
#[derive(Debug, Clone, Copy)]
pub enum Work {
    /// Applying a batch of changed paths.
    Sync,
    /// Walking a whole folder and fixing what differs from the index.
    Reconcile,
}

/// Marks work as running until dropped (also on error paths). `E` is how the guard holds
/// the engine: a borrow for work done in place, an `Arc` for work a spawned task will do.
pub struct WorkGuard<E: std::ops::Deref<Target = Engine>> {
    engine: E,
    kind: Work,
}

impl<E: std::ops::Deref<Target = Engine>> Drop for WorkGuard<E> {
    fn drop(&mut self) {
        let mut a = self.engine.activity();
        match self.kind {
            Work::Sync => a.syncs -= 1,
            Work::Reconcile => a.reconciles -= 1,
        }
        if a.syncs + a.reconciles == 0 {
            a.progress = None;
        }
    }
}

/// What an indexing run did.
#[derive(Debug, Default, Serialize, Clone)]
pub struct IndexReport {
    pub indexed: usize,
    pub unchanged: usize,
    pub skipped: usize,
    /// `skipped` by the kind of reason (`binary`, `empty`, `too large`, `timeout`, …).
    pub skipped_by_reason: BTreeMap<String, usize>,
    pub removed: usize,
    pub chunks: usize,
    /// PDF pages read by the files indexed.
    pub pages: usize,
    pub seconds: f64,
    /// Time spent chunking and embedding, and the model tokens embedded (for throughput).
    #[serde(skip)]
    pub embed_seconds: f64,
    #[serde(skip)]
    pub embed_tokens: usize,
}

impl IndexReport {
    /// More files written than one batch holds: a bulk run (a first index, a reconcile
    /// that found much changed, a branch switch under the watcher), which leaves a text
    /// index segment per batch for [`Store::maintain`] to merge.
    fn bulk(&self) -> bool {
        self.indexed + self.removed > FILES_PER_BATCH
    }

    fn add(&mut self, o: &IndexReport) {
        self.indexed += o.indexed;
        self.unchanged += o.unchanged;
        self.skipped += o.skipped;
        for (reason, n) in &o.skipped_by_reason {
            *self.skipped_by_reason.entry(reason.clone()).or_default() += n;
        }
        self.removed += o.removed;
        self.chunks += o.chunks;
        self.pages += o.pages;
    }
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Status {
    pub documents: usize,
    pub chunks: usize,
    pub data_dir: String,
    /// Whether anything is being indexed right now (a sync or a reconcile).
    pub indexing: bool,
    /// Whether a whole-folder reconcile (start-up, lost events, periodic) is running.
    pub reconciling: bool,
    /// Changed paths taken in by the watcher and not yet applied.
    pub queue: usize,
    /// Files done and total of the indexing run in progress.
    pub progress: Option<Progress>,
    /// Chunk texts embedded since start (vectors reused for unchanged text are not counted).
    pub texts_embedded: u64,
    /// Watched folder → how it is followed (file-system events, or periodic reconcile when
    /// the OS refused more watches).
    pub watching: BTreeMap<String, String>,
    /// Number of files with a problem (skipped, or indexed with a warning).
    pub problem_count: usize,
    /// The last problem per path.
    pub problems: BTreeMap<String, String>,
    /// For an index on object storage: this node's role, the table version it serves, how
    /// it follows the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<crate::scale_out::StoreStatus>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

impl Engine {
    /// Finds the models and opens the stores; the embedding model and the generator load on
    /// first use.
    pub async fn open(config: Config) -> Result<Arc<Self>> {
        let models = ModelPaths::locate(config.models.as_deref())?;
        let chunker = Chunker::new(&models, config.chunk_tokens, config.chunk_overlap)?;
        let storage = config.storage()?;
        let store = Store::open_at(&storage, config.role)
            .await
            .with_context(|| format!("opening the index in {}", storage.describe()))?;
        let extractor = extractor(&config, true)?;
        let problems = load_problems(&config.data_dir);
        let answers = crate::answers::AnswerLog::new(&config.data_dir);
        Ok(Arc::new(Engine {
            config,
            models,
            embedder: tokio::sync::OnceCell::new(),
            chunker: Arc::new(chunker),
            extractor: Arc::new(extractor),
            store,
            generator: tokio::sync::Mutex::new(Vec::new()),
            problems: Mutex::new(problems),
            activity: Mutex::new(Activity::default()),
            layouts: Mutex::new(HashMap::new()),
            watching: Mutex::new(BTreeMap::new()),
            answers,
        }))
    }

    /// Brings the index in line with `paths` (folders or files): new and changed files are
    /// embedded, unchanged ones (same content hash) skipped, and files indexed under a given
    /// folder that are gone from disk removed.
    pub async fn index_paths(
        &self,
        paths: &[PathBuf],
        on_progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<IndexReport> {
        let started = Instant::now();
        let mut files = Vec::new();
        let mut roots = Vec::new();
        for p in paths {
            let p = std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?;
            if p.is_dir() {
                files.extend(walk::files(&p));
                roots.push(p);
            } else {
                files.push(p);
            }
        }
        // Overlapping arguments (a folder and a file in it) must not index a file twice.
        files.sort();
        files.dedup();
        let known = self.indexed().await?;
        let on_disk: HashSet<String> = files.iter().map(|f| path_key(f)).collect();
        let gone: Vec<String> = known
            .hash_of
            .keys()
            .filter(|k| !on_disk.contains(*k) && roots.iter().any(|r| Path::new(k).starts_with(r)))
            .cloned()
            .collect();
        let progress = |done: usize| {
            self.activity().progress = Some((done, files.len()));
            on_progress(done, files.len());
        };
        progress(0);
        let known = Arc::new(known);
        let mut report = IndexReport::default();
        for (i, batch) in files.chunks(FILES_PER_BATCH).enumerate() {
            report.add(&self.write_batch(batch.to_vec(), known.clone()).await?);
            progress((i * FILES_PER_BATCH + batch.len()).min(files.len()));
        }
        // Removed last, so a file that moved can take its vectors from its old path first.
        report.add(&self.remove(gone).await?);
        self.store.maintain(report.bulk()).await?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Applies file-system changes seen by the watcher: each path is (re)indexed if it is
    /// now an indexable file, walked if it is a folder, and removed (with everything under
    /// it) if it no longer exists or is now ignored.
    pub async fn sync_paths(&self, root: &Path, changed: Vec<PathBuf>) -> Result<IndexReport> {
        let started = Instant::now();
        let mut to_index = Vec::new();
        let mut to_remove = Vec::new();
        let known = self.indexed().await?;
        for p in changed {
            // Symlinks are not followed, as in `walk::files`: a link to a folder would index
            // the tree twice (or loop), and a reconcile would drop what a link added.
            let meta = std::fs::symlink_metadata(&p);
            let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
            let gone = meta.is_err()
                || meta.is_ok_and(|m| m.file_type().is_symlink())
                || walk::is_ignored(root, &p);
            if gone {
                let key = path_key(&p);
                let prefix = format!("{key}/");
                to_remove.extend(
                    known
                        .hash_of
                        .keys()
                        .filter(|k| **k == key || k.starts_with(&prefix))
                        .cloned(),
                );
            } else if is_dir {
                to_index.extend(walk::files(&p));
            } else {
                to_index.push(p);
            }
        }
        // A new folder arrives as events for the folder and for its files: index each once.
        to_index.sort();
        to_index.dedup();
        let known = Arc::new(known);
        let mut report = IndexReport::default();
        for batch in to_index.chunks(FILES_PER_BATCH) {
            report.add(&self.write_batch(batch.to_vec(), known.clone()).await?);
        }
        // Removed last, so a renamed file can take its vectors from its old path first.
        report.add(&self.remove(to_remove).await?);
        self.store.maintain(report.bulk()).await?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn indexed(&self) -> Result<Indexed> {
        let hash_of = self.store.documents().await?;
        let hashes = hash_of.values().cloned().collect();
        Ok(Indexed { hash_of, hashes })
    }

    async fn remove(&self, paths: Vec<String>) -> Result<IndexReport> {
        let report = IndexReport {
            removed: paths.len(),
            ..Default::default()
        };
        {
            let mut problems = self.problems.lock().expect("problems lock");
            for p in &paths {
                problems.remove(p);
            }
            self.save_problems(&problems);
        }
        self.store
            .apply(
                paths
                    .into_iter()
                    .map(|path| Change::Delete { path })
                    .collect(),
            )
            .await?;
        Ok(report)
    }

    async fn write_batch(&self, files: Vec<PathBuf>, known: Arc<Indexed>) -> Result<IndexReport> {
        let (chunker, max) = (self.chunker.clone(), self.config.max_file_bytes);
        let k = known.clone();
        let x = self.extractor.clone();
        let read = tokio::task::spawn_blocking(move || read_files(&files, &k, max, &x)).await?;
        // Vectors of chunks whose text is unchanged are reused: an edit re-embeds only what
        // changed, a moved or renamed file (same content hash) nothing at all. Only paths and
        // contents the index holds are looked up: each lookup scans the vector table, and a
        // batch of new files (all of a first index) has nothing to reuse.
        let paths: Vec<String> = read
            .docs
            .iter()
            .map(|d| path_key(&d.path))
            .filter(|p| known.hash_of.contains_key(p))
            .collect();
        let hashes: Vec<&str> = read
            .docs
            .iter()
            .map(|d| d.content_hash.as_str())
            .filter(|h| known.hashes.contains(*h))
            .collect();
        let path_refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let reuse: HashMap<String, Vec<f32>> = self
            .store
            .chunks_of(&path_refs, &hashes)
            .await?
            .into_iter()
            .map(|c| (embed_text(&c.title, &c.text), c.vector))
            .collect();
        let Read {
            docs,
            mut report,
            problems,
            unreadable,
        } = read;
        let (changes, chunks, indexed) = if docs.is_empty() {
            // Nothing changed: a re-check of unchanged files never loads the model.
            (Vec::new(), 0, 0)
        } else {
            let embedder = self.embedder().await?;
            tokio::task::spawn_blocking(move || {
                let (changes, chunks) = embed_documents(&docs, &embedder, &chunker, &reuse)?;
                anyhow::Ok((changes, chunks, docs.len()))
            })
            .await??
        };
        report.indexed += indexed;
        report.chunks += chunks;
        {
            let mut known_problems = self.problems.lock().expect("problems lock");
            for (path, problem) in problems {
                match problem {
                    Some(p) => known_problems.insert(path, p),
                    None => known_problems.remove(&path),
                };
            }
            self.save_problems(&known_problems);
        }
        // A file that can no longer be indexed (emptied, now binary, too large, vanished)
        // must not keep its old text searchable.
        let mut changes = changes;
        changes.extend(
            unreadable
                .into_iter()
                .filter(|p| known.hash_of.contains_key(p))
                .map(|path| Change::Delete { path }),
        );
        self.store.apply(changes).await?;
        Ok(report)
    }

    /// The `k` best chunks for `text` (hybrid search), with their page and section where
    /// their document has them.
    pub async fn query(&self, text: &str, k: usize) -> Result<Vec<Hit>> {
        let mut hits = self.search(text, k, SearchMode::default()).await?.0;
        self.locate(&mut hits).await?;
        Ok(hits)
    }

    /// The `k` best chunks by the chosen retrievers, with the time each stage took
    /// (`embed` is the query embedding).
    pub async fn search(
        &self,
        text: &str,
        k: usize,
        mode: SearchMode,
    ) -> Result<(Vec<Hit>, StageTimes, Duration)> {
        crate::usage::record(|c| c.searches += 1);
        // The embedding starts on a blocking thread now and runs while BM25 searches.
        let embedder = match mode {
            SearchMode::Bm25 => None,
            _ => Some(self.embedder().await?),
        };
        let embedding = embedder.map(|embedder| {
            let q = text.to_string();
            tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                embedder.embed_query(&q).map(|v| (v, t.elapsed()))
            })
        });
        let embed_time = Mutex::new(Duration::ZERO);
        let vector = async {
            let Some(handle) = embedding else {
                return Ok(Vec::new());
            };
            let embedded = handle
                .await
                .map_err(|e| sovrag_retrieve::Error::Invalid(format!("query embedding: {e}")))?;
            let (v, took) = embedded
                .map_err(|e| sovrag_retrieve::Error::Invalid(format!("query embedding: {e}")))?;
            *embed_time.lock().expect("embed time") = took;
            Ok(v)
        };
        let (hits, times) = self.store.search_timed(text, vector, k, mode).await?;
        let embed = *embed_time.lock().expect("embed time");
        Ok((hits, times, embed))
    }

    /// Indexes documents that are not files (e.g. a benchmark corpus): each `path` is an id.
    pub async fn index_documents(
        &self,
        docs: Vec<load::Document>,
        on_progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<IndexReport> {
        let started = Instant::now();
        let mut report = IndexReport::default();
        let total = docs.len();
        let mut done = 0;
        let mut docs = docs.into_iter().peekable();
        while docs.peek().is_some() {
            let batch: Vec<load::Document> = docs.by_ref().take(DOCS_PER_BATCH).collect();
            let (embedder, chunker) = (self.embedder().await?, self.chunker.clone());
            let n = batch.len();
            let (changes, chunks, tokens, secs) = tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                let (changes, chunks) =
                    embed_documents(&batch, &embedder, &chunker, &HashMap::new())?;
                let secs = t.elapsed().as_secs_f64();
                // Counted from the stored chunks after the timed part (no second chunking):
                // the figure is the model's throughput.
                let tokens: usize = changes
                    .iter()
                    .filter_map(|c| match c {
                        Change::Replace { chunks, .. } => Some(chunks),
                        Change::Delete { .. } => None,
                    })
                    .flatten()
                    .map(|c| chunker.model_tokens(&embed_text(&c.title, &c.text)))
                    .sum();
                anyhow::Ok((changes, chunks, tokens, secs))
            })
            .await??;
            report.embed_seconds += secs;
            report.embed_tokens += tokens;
            self.store.apply(changes).await?;
            report.indexed += n;
            report.chunks += chunks;
            done += n;
            on_progress(done, total);
        }
        self.store.maintain(total > DOCS_PER_BATCH).await?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Loads the embedding model once; later calls share it.
    pub async fn embedder(&self) -> Result<Arc<Embedder>> {
        self.embedder
            .get_or_try_init(|| async {
                let (m, threads) = (self.models.clone(), self.config.threads);
                let e = tokio::task::spawn_blocking(move || Embedder::load(&m, threads))
                    .await?
                    .context("loading the embedding model")?;
                let e = Arc::new(e);
                crate::usage::track(&e);
                anyhow::Ok(e)
            })
            .await
            .cloned()
    }

    /// Keeps the problems for `status`. Losing them costs only that listing, so a failure
    /// is logged, not returned.
    fn save_problems(&self, problems: &BTreeMap<String, String>) {
        let file = self.config.data_dir.join(PROBLEMS_FILE);
        if let Err(e) = crate::files::write_json(&file, problems) {
            tracing::debug!("{e:#}");
        }
    }

    pub async fn status(&self) -> Result<Status> {
        let (documents, chunks) = self.store.counts().await?;
        let problems = self.problems.lock().expect("problems lock").clone();
        let a = self.activity();
        Ok(Status {
            documents,
            chunks,
            data_dir: self.config.data_dir.display().to_string(),
            indexing: a.syncs + a.reconciles > 0,
            reconciling: a.reconciles > 0,
            queue: a.queued,
            progress: a.progress.map(|(done, total)| Progress { done, total }),
            texts_embedded: self.embedder.get().map_or(0, |e| e.texts_embedded()),
            watching: self.watching.lock().expect("watching lock").clone(),
            problem_count: problems.len(),
            problems,
            store: crate::scale_out::status(&self.config, self.store.following()),
        })
    }

    /// Catches up with a table on object storage that other nodes write (see
    /// [`Store::follow`]).
    pub async fn follow(&self) -> Result<sovrag_retrieve::Followed> {
        Ok(self.store.follow().await?)
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        // A panic elsewhere cannot leave these counters half-updated: keep going.
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks work as running (shown in status) until the guard is dropped.
    pub fn work(&self, kind: Work) -> WorkGuard<&Engine> {
        self.count_work(kind);
        WorkGuard { engine: self, kind }
    }

    /// [`Engine::work`] for work a task will start later: status shows it from now, so
    /// nobody sees the engine idle before the task has begun.
    pub fn work_ahead(self: &Arc<Self>, kind: Work) -> WorkGuard<Arc<Engine>> {
        self.count_work(kind);
        WorkGuard {
            engine: self.clone(),
            kind,
        }
    }

    fn count_work(&self, kind: Work) {
        let mut a = self.activity();
        match kind {
            Work::Sync => a.syncs += 1,
            Work::Reconcile => a.reconciles += 1,
        }
    }

    /// Counts `n` more changed paths waiting to be applied (several watchers share this).
    pub fn queue_add(&self, n: usize) {
        self.activity().queued += n;
    }

    /// Counts `n` waiting paths as applied (or dropped for a reconcile, which covers them).
    pub fn queue_done(&self, n: usize) {
        let mut a = self.activity();
        a.queued = a.queued.saturating_sub(n);
    }

    /// Records how a watched folder is followed.
    pub fn set_watching(&self, root: &Path, how: String) {
        self.watching
            .lock()
            .expect("watching lock")
            .insert(path_key(root), how);
    }
}

/// The problems kept by the last run in `data_dir`; none if there are none or they cannot be
/// read (they are a listing, not a record).
fn load_problems(data_dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(data_dir.join(PROBLEMS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Extraction for `config`: workers are this binary, run as `sovrag __extract-worker`;
/// with `cached`, results are kept under the data dir by content hash.
pub fn extractor(config: &Config, cached: bool) -> Result<Extractor> {
    let exe =
        std::env::current_exe().context("finding the sovrag binary to run extraction workers")?;
    let limits = Limits {
        max_file_bytes: config.max_file_bytes,
        timeout_secs: config.extract_timeout,
        ..Limits::default()
    };
    Ok(Extractor::new(
        Isolation::new(exe, vec![crate::EXTRACT_WORKER.into()], limits),
        cached.then(|| config.data_dir.join("extracted")),
    ))
}

/// What the index holds at the start of a sync, read once and shared by its batches.
struct Indexed {
    /// `path → content hash` of every indexed document.
    hash_of: HashMap<String, String>,
    /// Every indexed content hash (a moved file is found by its content).
    hashes: HashSet<String>,
}

/// How a path is stored: absolute, as the file system gave it.
pub fn path_key(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Files read from disk: the documents whose content changed, and what was skipped.
struct Read {
    docs: Vec<load::Document>,
    report: IndexReport,
    problems: Vec<(String, Option<String>)>,
    /// Paths that could not be indexed (skipped or failed to read).
    unreadable: Vec<String>,
}

/// Reads `files`, keeping the ones whose content changed (blocking work).
fn read_files(files: &[PathBuf], known: &Indexed, max_bytes: u64, x: &Extractor) -> Read {
    let mut report = IndexReport::default();
    let mut problems = Vec::new();
    let mut docs = Vec::new();
    let mut unreadable = Vec::new();
    for f in files {
        let key = path_key(f);
        match load::load_document(f, max_bytes, x) {
            Ok(doc) => {
                if let Some(w) = &doc.warning {
                    tracing::warn!("{w}");
                }
                problems.push((key.clone(), doc.warning.clone()));
                if known.hash_of.get(&key) == Some(&doc.content_hash) {
                    report.unchanged += 1;
                } else {
                    if doc.format == Some(sovrag_ingest::extract::Format::Pdf) {
                        report.pages += doc.pages.len();
                    }
                    docs.push(doc);
                }
            }
            Err(e) => {
                tracing::warn!("{e}");
                report.skipped += 1;
                let kind = match &e {
                    sovrag_ingest::Error::Skipped { kind, .. } => kind,
                    _ => "unreadable",
                };
                *report
                    .skipped_by_reason
                    .entry(kind.to_string())
                    .or_default() += 1;
                problems.push((key.clone(), Some(e.to_string())));
                unreadable.push(key);
            }
        }
    }
    Read {
        docs,
        report,
        problems,
        unreadable,
    }
}

/// Chunks and embeds documents into store changes; returns them and the chunk count.
///
/// A chunk whose embedded text is a key of `reuse` takes that vector instead of being embedded.
pub fn embed_documents(
    docs: &[load::Document],
    embedder: &Embedder,
    chunker: &Chunker,
    reuse: &HashMap<String, Vec<f32>>,
) -> Result<(Vec<Change>, usize)> {
    let chunked: Vec<_> = docs.iter().map(|d| chunker.chunk(d)).collect();
    let texts: Vec<String> = docs
        .iter()
        .zip(&chunked)
        .flat_map(|(d, cs)| cs.iter().map(|c| c.embed_text(&d.title)))
        .collect();
    let fresh: Vec<&String> = texts.iter().filter(|t| !reuse.contains_key(*t)).collect();
    let mut embedded = embedder.embed_documents(&fresh)?.into_iter();
    let mut vectors = texts.iter().map(|t| match reuse.get(t) {
        Some(v) => v.clone(),
        None => embedded.next().unwrap_or_default(),
    });
    let mut changes = Vec::with_capacity(docs.len());
    for (doc, chunks) in docs.iter().zip(chunked) {
        let path = path_key(&doc.path);
        let id = doc_id(&doc.path);
        let records = chunks
            .into_iter()
            .map(|c| ChunkRecord {
                chunk_id: format!("{id}:{}", c.ord),
                doc_id: id.clone(),
                path: path.clone(),
                title: doc.title.clone(),
                start_line: c.start_line,
                end_line: c.end_line,
                text: c.text,
                content_hash: doc.content_hash.clone(),
                vector: vectors.next().unwrap_or_default(),
            })
            .collect();
        changes.push(Change::Replace {
            path,
            chunks: records,
        });
    }
    Ok((changes, texts.len()))
}

//! Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) through fastembed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use crate::models::ModelPaths;
use crate::{EMBEDDING_DIM, Error, Result};

/// MiniLM was trained on sequences of at most 256 word pieces; longer input is truncated.
pub const MAX_TOKENS: usize = 256;
/// Texts per ONNX Runtime call: one. A single-threaded session gains nothing from batching
/// (one sequence of a few hundred tokens already makes matrix products big enough to keep a
/// core busy), while a batch pays for padding to its longest text and for activations that
/// no longer fit in cache. Measured with `eval --embed-bench 500 --threads 2`, twice each:
/// 8 → 18.5 / 18.8 s, 4 → 17.2 / 17.9 s, 2 → 16.4 / 15.4 s, 1 → 14.9 / 14.9 s (earlier, on
/// 1000 texts: 32 → 44.7 s, 16 → 39.8 s, 8 → 37.6 s).
const BATCH: usize = 1;

/// Intra-op threads of the query session. A query is one short sequence: splitting it over
/// threads mostly adds their meet-ups, and a free core lets BM25 run beside it. On SciFact
/// (2 cores), one thread against two: hybrid search p50 12.0 vs 11.7 ms, p99 19.0 vs 26.5 ms.
const QUERY_THREADS: usize = 1;

/// The embedding model, loaded once and shared; safe to call from several threads.
///
/// Queries run on one single-threaded session ([`QUERY_THREADS`]). Bulk embedding runs one
/// single-threaded session per thread, each taking the next text ([`BATCH`]): a 6-layer
/// model on short inputs spends much of an intra-op parallel run waiting on its threads to
/// meet, while independent sessions never wait for each other.
pub struct Embedder {
    // fastembed's `embed` takes `&mut self`.
    model: Mutex<TextEmbedding>,
    bulk: OnceLock<std::result::Result<Vec<Mutex<TextEmbedding>>, String>>,
    source: (UserDefinedEmbeddingModel, usize),
    texts_embedded: AtomicU64,
    /// Every input embedded (documents and queries) and its model tokens, for the usage
    /// ledger.
    inputs_embedded: AtomicU64,
    tokens_embedded: AtomicU64,
    /// Foreground work under way ([`Embedder::foreground`]): bulk embedding waits between
    /// batches while it is above zero.
    foreground: (Mutex<usize>, Condvar),
}

/// Bulk embedding waits at most this long for foreground work before it embeds one batch
/// anyway, so that a server answering without pause still indexes.
const MAX_YIELD: Duration = Duration::from_secs(30);

/// Held while foreground work runs; see [`Embedder::foreground`].
pub struct Foreground<'a>(&'a Embedder);

impl Drop for Foreground<'_> {
    fn drop(&mut self) {
        let (count, resumed) = &self.0.foreground;
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        resumed.notify_all();
    }
}

static ORT: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Loads ONNX Runtime from `path` once per process. ort would panic on a missing library;
/// loading it ourselves first turns that into an error.
fn init_onnxruntime(path: &std::path::Path) -> Result<()> {
    ORT.get_or_init(|| {
        ort::init_from(path)
            .map(|_| ())
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))
    })
    .clone()
    .map_err(Error::Models)
}

/// A batch's index and its vectors.
type BatchVectors = (usize, Vec<Vec<f32>>);

fn session(model: &UserDefinedEmbeddingModel, threads: usize) -> Result<TextEmbedding> {
    let options = InitOptionsUserDefined::new()
        .with_max_length(MAX_TOKENS)
        .with_intra_threads(threads);
    TextEmbedding::try_new_from_user_defined(model.clone(), options)
        .map_err(|e| Error::Embed(format!("loading the embedding model: {e}")))
}

impl Embedder {
    /// Loads the model from the cache. `threads` is how many sessions bulk embedding runs
    /// side by side (default: all cores).
    pub fn load(models: &ModelPaths, threads: Option<usize>) -> Result<Self> {
        init_onnxruntime(&models.onnxruntime)?;
        let read = |name: &str| {
            let p = models.tokenizer_dir.join(name);
            std::fs::read(&p).map_err(|e| {
                Error::Models(format!(
                    "cannot read {}: {e}. Run `{}`.",
                    p.display(),
                    crate::models::SETUP_COMMAND
                ))
            })
        };
        let onnx = std::fs::read(&models.embed_onnx).map_err(|e| {
            Error::Models(format!("cannot read {}: {e}", models.embed_onnx.display()))
        })?;
        let files = TokenizerFiles {
            tokenizer_file: read("tokenizer.json")?,
            config_file: read("config.json")?,
            special_tokens_map_file: read("special_tokens_map.json")?,
            tokenizer_config_file: read("tokenizer_config.json")?,
        };
        let model = UserDefinedEmbeddingModel::new(onnx, files).with_pooling(Pooling::Mean);
        let threads = threads
            .filter(|&n| n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1);
        let session = session(&model, QUERY_THREADS)?;
        Ok(Embedder {
            model: Mutex::new(session),
            bulk: OnceLock::new(),
            source: (model, threads),
            texts_embedded: AtomicU64::new(0),
            inputs_embedded: AtomicU64::new(0),
            tokens_embedded: AtomicU64::new(0),
            foreground: (Mutex::new(0), Condvar::new()),
        })
    }

    /// Marks foreground work (an answer being written) until the guard is dropped: bulk
    /// embedding pauses between batches meanwhile, up to [`MAX_YIELD`] a batch. Both use
    /// every core, and llama.cpp's threads slow several times over when they share them:
    /// measured with a 0.5B model, decoding fell from 23 to 6.3 tokens/s, and once to 1.1,
    /// while the watcher embedded 400 new files. Queries are not held up.
    pub fn foreground(&self) -> Foreground<'_> {
        let (count, _) = &self.foreground;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Foreground(self)
    }

    /// Waits while foreground work runs, at most [`MAX_YIELD`].
    fn yield_to_foreground(&self) {
        let (count, resumed) = &self.foreground;
        let started = Instant::now();
        let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let Some(left) = MAX_YIELD.checked_sub(started.elapsed()) else {
                return;
            };
            n = resumed
                .wait_timeout(n, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The bulk sessions, created on first use so a one-off query pays for one session only.
    fn bulk(&self) -> Result<&[Mutex<TextEmbedding>]> {
        let (model, threads) = &self.source;
        self.bulk
            .get_or_init(|| {
                (0..*threads)
                    .map(|_| session(model, 1).map(Mutex::new))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(|e| Error::Embed(e.clone()))
    }

    /// Embeds many texts; returns one unit-length vector per text, in input order.
    ///
    /// Texts are embedded longest first, so the workers finish together: the last ones
    /// taken are the quickest. (Batches of more than one text would also pad less this way.)
    pub fn embed_documents<S: AsRef<str> + Send + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().len()));
        let batches: Vec<&[usize]> = order.chunks(BATCH).collect();
        let workers = self.bulk()?;
        let next = AtomicUsize::new(0);
        // Each worker takes the next batch until none is left; results carry their batch index.
        let results: Vec<Result<Vec<BatchVectors>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter()
                .take(batches.len())
                .map(|worker| {
                    let (batches, next) = (&batches, &next);
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        loop {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            let Some(batch) = batches.get(b) else {
                                return Ok(done);
                            };
                            self.yield_to_foreground();
                            let inputs: Vec<&str> =
                                batch.iter().map(|&i| texts[i].as_ref()).collect();
                            done.push((b, self.run(worker, &inputs)?));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Embed("embedding worker panicked".into())))
                })
                .collect()
        });
        self.texts_embedded
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        let mut out = vec![Vec::new(); texts.len()];
        for r in results {
            for (b, vectors) in r? {
                for (&i, v) in batches[b].iter().zip(vectors) {
                    out[i] = v;
                }
            }
        }
        Ok(out)
    }

    /// Embeds one query.
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.run(&self.model, &[text])?
            .pop()
            .ok_or_else(|| Error::Embed("no vector returned".into()))
    }

    /// How many document texts (not queries) this embedder has embedded since it was loaded.
    pub fn texts_embedded(&self) -> u64 {
        self.texts_embedded.load(Ordering::Relaxed)
    }

    /// How many inputs (documents and queries) this embedder has embedded.
    pub fn inputs_embedded(&self) -> u64 {
        self.inputs_embedded.load(Ordering::Relaxed)
    }

    /// How many model tokens (special tokens included, padding not) it has run.
    pub fn tokens_embedded(&self) -> u64 {
        self.tokens_embedded.load(Ordering::Relaxed)
    }

    fn run(&self, model: &Mutex<TextEmbedding>, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut model = model
            .lock()
            .map_err(|_| Error::Embed("embedding model lock poisoned".into()))?;
        let vectors = model
            .embed(inputs, Some(inputs.len().max(1)))
            .map_err(|e| Error::Embed(e.to_string()))?;
        if vectors.len() != inputs.len() || vectors.iter().any(|v| v.len() != EMBEDDING_DIM) {
            return Err(Error::Embed(format!(
                "expected {} vectors of {EMBEDDING_DIM} dims",
                inputs.len()
            )));
        }
        // Counted on the model's own tokenizer (truncation as configured). A second pass,
        // lost in the noise: 1,000 SciFact documents on 2 threads took 38.8 and 36.8 s with
        // it, 38.8 and 36.0 s without (`eval --embed-bench 1000`, runs interleaved).
        let tokens: usize = model
            .tokenizer
            .encode_batch(inputs.to_vec(), true)
            .map(|encs| {
                encs.iter()
                    .map(|e| e.get_attention_mask().iter().filter(|&&m| m == 1).count())
                    .sum()
            })
            .unwrap_or(0);
        self.tokens_embedded
            .fetch_add(tokens as u64, Ordering::Relaxed);
        self.inputs_embedded
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_embedding_waits_for_foreground_work() {
        let dir = std::env::var_os("SOVRAG_MODELS").map(std::path::PathBuf::from);
        let models = ModelPaths::locate(dir.as_deref()).expect("models: scripts/fetch_models.py");
        let e = Embedder::load(&models, Some(1)).unwrap();
        let texts: Vec<String> = (0..4).map(|i| format!("text number {i}")).collect();
        let guard = e.foreground();
        std::thread::scope(|s| {
            let bulk = s.spawn(|| e.embed_documents(&texts));
            // Alone, four short texts embed well within this.
            std::thread::sleep(Duration::from_millis(1500));
            assert!(
                !bulk.is_finished(),
                "bulk embedding ran during foreground work"
            );
            drop(guard);
            assert_eq!(bulk.join().unwrap().unwrap().len(), 4);
        });
    }
}

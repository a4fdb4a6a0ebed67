//! Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) through fastembed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use fastembed::{
    InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel,
};

use crate::models::ModelPaths;
use crate::{EMBEDDING_DIM, Error, Result};

/// MiniLM was trained on sequences of at most 256 word pieces; longer input is truncated.
pub const MAX_TOKENS: usize = 256;
/// Texts per ONNX Runtime call. With inputs sorted by length, 32 keeps padding small while
/// amortising the per-call overhead.
const BATCH: usize = 32;

/// The embedding model, loaded once and shared; safe to call from several threads.
pub struct Embedder {
    // fastembed's `embed` takes `&mut self`.
    model: Mutex<TextEmbedding>,
    texts_embedded: AtomicU64,
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

impl Embedder {
    /// Loads the model from the cache. `threads` caps ONNX Runtime's intra-op threads
    /// (default: all cores).
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
        let mut options = InitOptionsUserDefined::new().with_max_length(MAX_TOKENS);
        if let Some(n) = threads.filter(|&n| n > 0) {
            options = options.with_intra_threads(n);
        }
        let model = TextEmbedding::try_new_from_user_defined(model, options)
            .map_err(|e| Error::Embed(format!("loading {}: {e}", models.embed_onnx.display())))?;
        Ok(Embedder {
            model: Mutex::new(model),
            texts_embedded: AtomicU64::new(0),
        })
    }

    /// Embeds many texts; returns one unit-length vector per text, in input order.
    ///
    /// Texts are embedded shortest first so each batch pads to a similar length: padding
    /// is pure wasted compute in a transformer.
    pub fn embed_documents<S: AsRef<str> + Send + Sync>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].as_ref().len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i].as_ref()).collect();
            let vectors = self.run(&inputs)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Embeds one query.
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.run(&[text])?
            .pop()
            .ok_or_else(|| Error::Embed("no vector returned".into()))
    }

    /// How many texts this embedder has embedded since it was loaded.
    pub fn texts_embedded(&self) -> u64 {
        self.texts_embedded.load(Ordering::Relaxed)
    }

    fn run(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut model = self
            .model
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
        self.texts_embedded
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        Ok(vectors)
    }
}

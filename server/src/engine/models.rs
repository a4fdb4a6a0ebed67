//! Generator models: the GGUFs a request may name, and the one held loaded (hot swap).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use sovrag_generate::{Generator, GeneratorConfig};

use super::Engine;

/// A generator a request may name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// The GGUF's file name without `.gguf`.
    pub id: String,
    #[serde(skip)]
    pub path: PathBuf,
    /// When the file was written (Unix seconds).
    pub created: u64,
}

/// A request named a model that is not available.
#[derive(Debug, thiserror::Error)]
#[error("the model `{0}` does not exist: GET /v1/models lists the models available")]
pub struct UnknownModel(pub String);

/// The id a request names `path` by.
fn model_id(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn info(path: PathBuf) -> ModelInfo {
    let created = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    ModelInfo {
        id: model_id(&path),
        path,
        created,
    }
}

impl Engine {
    /// The generator used when a request names none: `--gguf`, else the default in the model
    /// cache.
    fn default_gguf(&self) -> PathBuf {
        self.config
            .gguf
            .clone()
            .unwrap_or_else(|| self.models.gguf.clone())
    }

    /// The id of the default generator.
    pub fn default_model(&self) -> String {
        model_id(&self.default_gguf())
    }

    /// Every generator a request may name: the GGUFs in the model cache, and the default
    /// one wherever it is; the default first.
    pub fn models(&self) -> Vec<ModelInfo> {
        let default = self.default_gguf();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.models.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
                            && p.is_file()
                    })
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        paths.retain(|p| model_id(p) != model_id(&default));
        std::iter::once(default)
            .filter(|p| p.is_file())
            .chain(paths)
            .map(info)
            .collect()
    }

    /// The default generator, loaded on first use.
    pub async fn generator(&self) -> Result<Arc<Generator>> {
        self.generator_for(None).await
    }

    /// The generator `model` names (`None`: the default). Up to `--max-loaded-models` are
    /// held loaded (default 1): asking for another loads it, and the least recently used
    /// goes, though requests already running on it finish on it (they hold it) before its
    /// memory is freed. A model that fails to load is an error for this request; those
    /// loaded before stay.
    pub async fn generator_for(&self, model: Option<&str>) -> Result<Arc<Generator>> {
        let path = match model {
            None => self.default_gguf(),
            Some(id) if id == self.default_model() => self.default_gguf(),
            Some(id) => self
                .models()
                .into_iter()
                .find(|m| m.id == id)
                .map(|m| m.path)
                .ok_or_else(|| UnknownModel(id.to_owned()))?,
        };
        // Held across the load: two requests for a new model load it once.
        let mut loaded = self.generator.lock().await;
        if let Some(at) = loaded.iter().position(|(p, _)| *p == path) {
            // Most recently used last.
            let hit = loaded.remove(at);
            let g = hit.1.clone();
            loaded.push(hit);
            return Ok(g);
        }
        let cfg = GeneratorConfig {
            model_path: path.clone(),
            n_ctx: self.config.ctx_size,
            n_gpu_layers: self.config.gpu_layers,
            max_answer_tokens: self.config.max_answer_tokens,
            threads: self.config.threads.map(|t| t as i32),
            abstain_threshold: self.config.abstain_threshold,
            focus_words: self.config.focus_words,
            ..GeneratorConfig::default()
        };
        let g = tokio::task::spawn_blocking(move || Generator::load(cfg))
            .await?
            .with_context(|| format!("loading the generator {}", path.display()));
        crate::usage::record(|c| match &g {
            Ok(_) => c.model_loads += 1,
            Err(_) => c.model_load_failures += 1,
        });
        let g = Arc::new(g?);
        loaded.push((path, g.clone()));
        // Past the limit the least recently used goes; its memory is freed once the
        // requests still running on it finish. (The new one loads first, so a model that
        // fails to load leaves the others serving.)
        let excess = loaded
            .len()
            .saturating_sub(self.config.max_loaded_models.max(1));
        loaded.drain(..excess);
        Ok(g)
    }
}

impl Engine {
    /// `question` as retrieval needs it: unchanged when it opens a conversation; a
    /// follow-up (`history` holds earlier turns) rewritten by generator `model` as a
    /// standalone question. A model that cannot rewrite (no chat template) gets the previous
    /// user turn and the question together, which keeps the topic for search.
    pub async fn standalone_question(
        &self,
        model: &str,
        history: &[(String, String)],
        question: &str,
    ) -> Result<String> {
        if history.is_empty() {
            return Ok(question.to_owned());
        }
        let generator = self.generator_for(Some(model)).await?;
        let (h, q) = (history.to_vec(), question.to_owned());
        let (rewritten, prompt_tokens, generated_tokens) =
            tokio::task::spawn_blocking(move || generator.rewrite_question(&h, &q)).await??;
        // The rewrite is work the generator did: its tokens count, not as an answer.
        crate::usage::generated(model, prompt_tokens, generated_tokens);
        Ok(rewritten.unwrap_or_else(|| {
            let previous = history
                .iter()
                .rev()
                .find(|(role, _)| role == "user")
                .map_or("", |(_, t)| t.as_str());
            format!("{previous} {question}").trim().to_owned()
        }))
    }
}

impl Engine {
    /// Embeds `texts` with the shipped embedding model as passages are embedded; returns the
    /// vectors and the model tokens read.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize)> {
        let (embedder, chunker) = (self.embedder().await?, self.chunker.clone());
        tokio::task::spawn_blocking(move || {
            let tokens = texts.iter().map(|t| chunker.model_tokens(t)).sum();
            let vectors = embedder.embed_documents(&texts)?;
            anyhow::Ok((vectors, tokens))
        })
        .await?
    }
}

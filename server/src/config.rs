//! One `Config`: every setting is a flag, a `SOVRAG_*` environment variable and a TOML key.
//! Precedence: flag > environment > config file > default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::Settings;

/// Settings as the config file gives them. Flags and environment variables are merged by
/// clap in `cli.rs` and layered on top in [`Config::resolve`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    models: Option<PathBuf>,
    gguf: Option<PathBuf>,
    bind: Option<String>,
    api_key: Option<String>,
    #[serde(default)]
    watch: Vec<PathBuf>,
    chunk_tokens: Option<usize>,
    chunk_overlap: Option<usize>,
    gpu_layers: Option<u32>,
    ctx_size: Option<u32>,
    max_answer_tokens: Option<u32>,
    max_file_mb: Option<u64>,
    reconcile_secs: Option<u64>,
    threads: Option<usize>,
}

/// The resolved settings the engine and server run with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub models: Option<PathBuf>,
    pub gguf: Option<PathBuf>,
    pub bind: String,
    pub api_key: Option<String>,
    pub watch: Vec<PathBuf>,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub gpu_layers: u32,
    pub ctx_size: u32,
    pub max_answer_tokens: u32,
    pub max_file_bytes: u64,
    pub reconcile_secs: u64,
    pub threads: Option<usize>,
}

pub const DEFAULT_BIND: &str = "127.0.0.1:7878";

impl Config {
    /// Reads the config file (the given one must exist; the default one may not) and layers
    /// `over` on top of it.
    pub fn resolve(config_file: Option<&Path>, over: Settings) -> Result<Self> {
        let file = match config_file {
            Some(p) => Some(p.to_path_buf()),
            None => dirs::config_dir()
                .map(|d| d.join("sovrag").join("config.toml"))
                .filter(|p| p.is_file()),
        };
        let f: FileConfig = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("in config file {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = over
            .data_dir
            .or(f.data_dir)
            .or_else(|| dirs::data_dir().map(|d| d.join("sovrag")))
            .context("no data dir: pass --data-dir")?;
        let cfg = Config {
            data_dir,
            models: over.models.or(f.models),
            gguf: over.gguf.or(f.gguf),
            bind: over.bind.or(f.bind).unwrap_or_else(|| DEFAULT_BIND.into()),
            api_key: over.api_key.or(f.api_key).filter(|k| !k.is_empty()),
            watch: if over.watch.is_empty() {
                f.watch
            } else {
                over.watch
            },
            chunk_tokens: over.chunk_tokens.or(f.chunk_tokens).unwrap_or(200),
            chunk_overlap: over.chunk_overlap.or(f.chunk_overlap).unwrap_or(40),
            gpu_layers: over.gpu_layers.or(f.gpu_layers).unwrap_or(0),
            ctx_size: over.ctx_size.or(f.ctx_size).unwrap_or(4096),
            max_answer_tokens: over
                .max_answer_tokens
                .or(f.max_answer_tokens)
                .unwrap_or(200),
            max_file_bytes: over.max_file_mb.or(f.max_file_mb).unwrap_or(50) << 20,
            reconcile_secs: over.reconcile_secs.or(f.reconcile_secs).unwrap_or(600),
            threads: over.threads.or(f.threads),
        };
        anyhow::ensure!(
            cfg.chunk_tokens >= 16 && cfg.chunk_tokens <= 254,
            "chunk_tokens must be between 16 and 254 (the embedding model reads 256 tokens)"
        );
        anyhow::ensure!(
            cfg.chunk_overlap < cfg.chunk_tokens,
            "chunk_overlap must be smaller than chunk_tokens"
        );
        Ok(cfg)
    }
}

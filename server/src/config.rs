//! One `Config`: every setting is a flag, a `SOVRAG_*` environment variable and a TOML key.
//! Precedence: flag > environment > config file > default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

/// Every setting: a flag (anywhere on the line), a `SOVRAG_*` variable, and a config-file
/// key of the same name (see config.rs).
#[derive(Debug, Default, Args)]
pub struct Settings {
    /// Where the indexes live (default: the user's data dir, e.g. ~/.local/share/sovrag), or
    /// `s3://bucket/prefix` for an index on S3-compatible object storage shared by a writer
    /// and replicas (credentials and region from the usual AWS_* variables).
    #[arg(long, global = true, env = "SOVRAG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// With an s3:// data dir: this node's own state (its text indexes, logs, usage
    /// ledger). [default: the user's cache dir, e.g. ~/.cache/sovrag/stores/BUCKET_PREFIX]
    #[arg(long, global = true, env = "SOVRAG_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// With an s3:// data dir: the endpoint of a store that is not AWS (MinIO, Ceph:
    /// `http://10.0.0.5:9000`); AWS_ENDPOINT_URL works too.
    #[arg(long, global = true, env = "SOVRAG_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Allow an http:// S3 endpoint (refused otherwise).
    #[arg(long, global = true, env = "SOVRAG_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    /// With an s3:// data dir: let this writer start while another holds the writer lease.
    /// LanceDB merges concurrent commits (the store must honour conditional PUTs: check it
    /// with `sovrag doctor --store`), but two writers must not index the same folder.
    #[arg(long, global = true, env = "SOVRAG_ALLOW_CONCURRENT_WRITERS")]
    pub allow_concurrent_writers: bool,
    /// `serve --replica` looks for a new table version this often, in seconds. [default: 2]
    #[arg(long, global = true, env = "SOVRAG_FOLLOW_SECS")]
    pub follow_secs: Option<f64>,
    /// Model cache made by `python3 scripts/fetch_models.py` (default ~/.cache/sovrag/models).
    #[arg(long, global = true, env = "SOVRAG_MODELS")]
    pub models: Option<PathBuf>,
    /// A GGUF generator to use instead of the default (Qwen2.5-Coder-1.5B-Instruct in the
    /// model cache); any GGUF works, prompted through its own chat template.
    #[arg(long, global = true, env = "SOVRAG_GGUF")]
    pub gguf: Option<PathBuf>,
    /// Address `serve` listens on; non-loopback addresses need an API key. [default: 127.0.0.1:7878]
    #[arg(long, global = true, env = "SOVRAG_BIND")]
    pub bind: Option<String>,
    /// Require `Authorization: Bearer KEY` on API calls (repeatable: any of them is
    /// accepted; SOVRAG_API_KEY separates several with ',').
    #[arg(
        long,
        global = true,
        env = "SOVRAG_API_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_key: Vec<String>,
    /// A file of API keys, one a line (`#` comments), read again when it changes: keys are
    /// added or revoked without a restart.
    #[arg(long, global = true, env = "SOVRAG_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// A web origin (`https://app.example.com`) whose pages may call the API from a browser
    /// (repeatable). None by default: a page on the internet cannot read a local index.
    #[arg(long, global = true, env = "SOVRAG_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// A folder `serve` indexes and keeps in sync (repeatable; SOVRAG_WATCH separates with ':').
    #[arg(long, global = true, env = "SOVRAG_WATCH", value_delimiter = ':')]
    pub watch: Vec<PathBuf>,
    /// Chunk budget in embedding-model tokens. [default: 200]
    #[arg(long, global = true, env = "SOVRAG_CHUNK_TOKENS")]
    pub chunk_tokens: Option<usize>,
    /// Tokens shared by neighbouring chunks. [default: 40]
    #[arg(long, global = true, env = "SOVRAG_CHUNK_OVERLAP")]
    pub chunk_overlap: Option<usize>,
    /// Generator layers to offload to the GPU (needs a cuda or metal build). [default: 0]
    #[arg(long, global = true, env = "SOVRAG_GPU_LAYERS")]
    pub gpu_layers: Option<u32>,
    /// Generator context window in tokens. [default: 4096]
    #[arg(long, global = true, env = "SOVRAG_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// Longest answer, in tokens. [default: 200]
    #[arg(long, global = true, env = "SOVRAG_MAX_ANSWER_TOKENS")]
    pub max_answer_tokens: Option<u32>,
    /// Files larger than this many MB are skipped. [default: 50]
    #[arg(long, global = true, env = "SOVRAG_MAX_FILE_MB")]
    pub max_file_mb: Option<u64>,
    /// `serve --watch` re-walks each folder this often as a safety net for missed events;
    /// 0 turns it off except where the OS watch limit was hit. [default: 600]
    #[arg(long, global = true, env = "SOVRAG_RECONCILE_SECS")]
    pub reconcile_secs: Option<u64>,
    /// CPU threads for the models (default: all cores).
    #[arg(long, global = true, env = "SOVRAG_THREADS")]
    pub threads: Option<usize>,
    /// Check each sentence of an answer against the passages it cites, and drop those the
    /// model does not find there. [default: on]
    #[arg(long, global = true, env = "SOVRAG_VERIFY", value_enum)]
    pub verify: Option<OnOff>,
    /// Short answers (`eval --qa`) abstain where the model's probability of a null answer is
    /// at least this; chosen for the default generator, another GGUF may want its own.
    /// [default: 0.02]
    #[arg(long, global = true, env = "SOVRAG_ABSTAIN_THRESHOLD")]
    pub abstain_threshold: Option<f32>,
    /// Show the model each passage as its sentences nearest the question, up to about this
    /// many words (0: whole passages). Reading the prompt is most of an answer's time on a
    /// CPU: 45 brings the first token about 40% sooner, but the model abstains less well
    /// where the passages do not answer; citations and verification keep whole passages.
    /// [default: 0]
    #[arg(long, global = true, env = "SOVRAG_FOCUS_WORDS")]
    pub focus_words: Option<usize>,
    /// Seconds a PDF or office document may take to extract before its worker is killed
    /// and the file skipped ("timeout"). [default: 30]
    #[arg(long, global = true, env = "SOVRAG_EXTRACT_TIMEOUT")]
    pub extract_timeout: Option<u64>,
    /// Answers the server writes at once; more wait in a short queue, and past it a request
    /// is refused with 429. [default: 2]
    #[arg(long, global = true, env = "SOVRAG_MAX_CONCURRENT_ANSWERS")]
    pub max_concurrent_answers: Option<usize>,
    /// Generators held loaded at once; a request naming another loads it and the least
    /// recently used is let go. Each costs its GGUF's size in memory. [default: 1]
    #[arg(long, global = true, env = "SOVRAG_MAX_LOADED_MODELS")]
    pub max_loaded_models: Option<usize>,
    /// Keep every answer (question, passages, answer, citations) in the data dir for
    /// feedback and `export finetune`. [default: on]
    #[arg(long, global = true, env = "SOVRAG_ANSWER_LOG", value_enum)]
    pub answer_log: Option<OnOff>,
    /// Keep no answers (the same as `--answer-log off`).
    #[arg(long, global = true, conflicts_with = "answer_log")]
    pub no_answer_log: bool,
    /// The cost table `report` prices usage with: hosted models' prices, electricity,
    /// hardware, a frontier score (default: ~/.config/sovrag/costs.toml when it exists, else
    /// the one built in; `sovrag report --costs-template` prints it to edit).
    #[arg(long, global = true, env = "SOVRAG_COSTS")]
    pub costs: Option<PathBuf>,
}

/// A switch, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn is_on(self) -> bool {
        self == OnOff::On
    }
}

/// Settings as the config file gives them. Flags and environment variables are merged by
/// clap in `cli.rs` and layered on top in [`Config::resolve`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    s3_endpoint: Option<String>,
    s3_allow_http: Option<bool>,
    allow_concurrent_writers: Option<bool>,
    follow_secs: Option<f64>,
    models: Option<PathBuf>,
    gguf: Option<PathBuf>,
    bind: Option<String>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    #[serde(default)]
    cors_origins: Vec<String>,
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
    verify: Option<OnOff>,
    abstain_threshold: Option<f32>,
    focus_words: Option<usize>,
    extract_timeout: Option<u64>,
    max_concurrent_answers: Option<usize>,
    answer_log: Option<OnOff>,
    costs: Option<PathBuf>,
    max_loaded_models: Option<usize>,
}

/// The resolved settings the engine and server run with.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's own folder: the whole index for a local store; the derived text indexes,
    /// logs and ledger when the index is on object storage (`remote`).
    pub data_dir: PathBuf,
    /// The index's `s3://bucket/prefix`, when it lives on object storage.
    pub remote: Option<String>,
    pub s3: sovrag_retrieve::S3Options,
    pub allow_concurrent_writers: bool,
    pub follow_secs: f64,
    /// Whether this process writes the index (`index`, `serve` without `--replica`) or only
    /// reads it: a reader never writes to object storage.
    pub role: sovrag_retrieve::Role,
    pub models: Option<PathBuf>,
    pub gguf: Option<PathBuf>,
    pub bind: String,
    /// API keys given as settings; see also `api_key_file`.
    pub api_keys: Vec<String>,
    pub api_key_file: Option<PathBuf>,
    /// Origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
    pub watch: Vec<PathBuf>,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub gpu_layers: u32,
    pub ctx_size: u32,
    pub max_answer_tokens: u32,
    pub max_file_bytes: u64,
    pub reconcile_secs: u64,
    pub threads: Option<usize>,
    /// Verify answers (see `Settings::verify`).
    pub verify: bool,
    pub abstain_threshold: f32,
    /// Words of each passage the model is shown (see `Settings::focus_words`).
    pub focus_words: usize,
    /// Seconds per extracted document (see `Settings::extract_timeout`).
    pub extract_timeout: u64,
    /// Answers written at once by the server (see `Settings::max_concurrent_answers`).
    pub max_concurrent_answers: usize,
    /// Generators held loaded at once (see `Settings::max_loaded_models`).
    pub max_loaded_models: usize,
    /// Keep answers for feedback and fine-tuning (see `Settings::answer_log`).
    pub answer_log: bool,
    /// The cost table's file, when not the built-in one.
    pub costs: Option<PathBuf>,
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
        let (data_dir, remote) = where_data_lives(data_dir, over.cache_dir.or(f.cache_dir))?;
        let cfg = Config {
            data_dir,
            remote,
            s3: sovrag_retrieve::S3Options {
                endpoint: over
                    .s3_endpoint
                    .or(f.s3_endpoint)
                    .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok()),
                allow_http: over.s3_allow_http || f.s3_allow_http.unwrap_or(false),
            },
            allow_concurrent_writers: over.allow_concurrent_writers
                || f.allow_concurrent_writers.unwrap_or(false),
            follow_secs: over.follow_secs.or(f.follow_secs).unwrap_or(2.0),
            role: sovrag_retrieve::Role::Reader,
            models: over.models.or(f.models),
            gguf: over.gguf.or(f.gguf),
            bind: over.bind.or(f.bind).unwrap_or_else(|| DEFAULT_BIND.into()),
            api_keys: if over.api_key.is_empty() {
                f.api_key.into_iter().collect()
            } else {
                over.api_key
            }
            .into_iter()
            .filter(|k| !k.is_empty())
            .collect(),
            api_key_file: over.api_key_file.or(f.api_key_file),
            cors_origins: if over.cors_origin.is_empty() {
                f.cors_origins
            } else {
                over.cors_origin
            },
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
            verify: over.verify.or(f.verify).is_none_or(OnOff::is_on),
            abstain_threshold: over
                .abstain_threshold
                .or(f.abstain_threshold)
                .unwrap_or(sovrag_generate::DEFAULT_ABSTAIN_THRESHOLD),
            focus_words: over
                .focus_words
                .or(f.focus_words)
                .unwrap_or(sovrag_generate::DEFAULT_FOCUS_WORDS),
            extract_timeout: over
                .extract_timeout
                .or(f.extract_timeout)
                .unwrap_or(30)
                .max(1),
            max_concurrent_answers: over
                .max_concurrent_answers
                .or(f.max_concurrent_answers)
                .unwrap_or(2)
                .max(1),
            max_loaded_models: over
                .max_loaded_models
                .or(f.max_loaded_models)
                .unwrap_or(1)
                .max(1),
            answer_log: !over.no_answer_log
                && over.answer_log.or(f.answer_log).is_none_or(OnOff::is_on),
            costs: over.costs.or(f.costs).or_else(|| {
                dirs::config_dir()
                    .map(|d| d.join("sovrag").join("costs.toml"))
                    .filter(|p| p.is_file())
            }),
        };
        anyhow::ensure!(
            cfg.follow_secs > 0.0 && cfg.follow_secs.is_finite(),
            "follow_secs must be a positive number of seconds"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&cfg.abstain_threshold),
            "abstain_threshold is a probability: between 0 and 1"
        );
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

impl Config {
    /// Where the store keeps its data.
    pub fn storage(&self) -> Result<sovrag_retrieve::Storage> {
        Ok(match &self.remote {
            Some(uri) => sovrag_retrieve::Storage::s3(uri, self.s3.clone(), &self.data_dir)?,
            None => sovrag_retrieve::Storage::local(&self.data_dir),
        })
    }
}

/// The local folder and, for `s3://bucket/prefix`, the remote index a data dir names. Its
/// own state goes to `cache_dir` (default: a folder per bucket and prefix in the user's cache
/// dir), so two stores never share one.
fn where_data_lives(
    data_dir: PathBuf,
    cache_dir: Option<PathBuf>,
) -> Result<(PathBuf, Option<String>)> {
    let Some(text) = data_dir.to_str() else {
        return Ok((data_dir, None));
    };
    if let Some(path) = text.strip_prefix("file://") {
        return Ok((PathBuf::from(path), None));
    }
    let Some((scheme, rest)) = text.split_once("://") else {
        return Ok((data_dir, None));
    };
    anyhow::ensure!(
        scheme == "s3",
        "--data-dir {text}: {scheme}:// is not supported (a local folder, file://, or s3://bucket/prefix)"
    );
    let rest = rest.trim_end_matches('/');
    anyhow::ensure!(
        !rest.is_empty() && !rest.starts_with('/'),
        "--data-dir {text}: no bucket name"
    );
    let local = match cache_dir {
        Some(d) => d,
        None => dirs::cache_dir()
            .context("no cache dir for this node's state: pass --cache-dir")?
            .join("sovrag")
            .join("stores")
            .join(rest.replace(['/', '\\'], "_")),
    };
    Ok((local, Some(format!("s3://{rest}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_is_a_folder_a_file_url_or_an_s3_prefix() {
        let (d, r) = where_data_lives("/srv/idx".into(), None).unwrap();
        assert_eq!((d, r), (PathBuf::from("/srv/idx"), None));
        let (d, r) = where_data_lives("file:///srv/idx".into(), None).unwrap();
        assert_eq!((d, r), (PathBuf::from("/srv/idx"), None));
        let (d, r) =
            where_data_lives("s3://kb/team/".into(), Some("/var/cache/n1".into())).unwrap();
        assert_eq!(d, PathBuf::from("/var/cache/n1"));
        assert_eq!(r.as_deref(), Some("s3://kb/team"));
        assert!(where_data_lives("gs://kb/team".into(), None).is_err());
        assert!(where_data_lives("s3://".into(), None).is_err());
    }
}

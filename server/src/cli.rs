//! The command line: what a user can type.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sovrag: search and cited answers over your own folders, fully offline.
#[derive(Debug, Parser)]
#[command(name = "sovrag", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML config file (default: ~/.config/sovrag/config.toml when it exists).
    #[arg(long, global = true, env = "SOVRAG_CONFIG")]
    pub config: Option<PathBuf>,
    /// More logging (-v: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

/// Every setting: a flag (anywhere on the line), a `SOVRAG_*` variable, and a config-file
/// key of the same name (see config.rs).
#[derive(Debug, Default, Args)]
pub struct Settings {
    /// Where the indexes live (default: the user's data dir, e.g. ~/.local/share/sovrag).
    #[arg(long, global = true, env = "SOVRAG_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Model cache made by `python3 scripts/fetch_models.py` (default ~/.cache/sovrag/models).
    #[arg(long, global = true, env = "SOVRAG_MODELS")]
    pub models: Option<PathBuf>,
    /// A GGUF generator to use instead of the default Gemma 3 270M.
    #[arg(long, global = true, env = "SOVRAG_GGUF")]
    pub gguf: Option<PathBuf>,
    /// Address `serve` listens on; non-loopback addresses need an API key. [default: 127.0.0.1:7878]
    #[arg(long, global = true, env = "SOVRAG_BIND")]
    pub bind: Option<String>,
    /// Require `Authorization: Bearer KEY` on API calls.
    #[arg(long, global = true, env = "SOVRAG_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Index (or re-sync) folders or files: new and changed files are embedded, deleted ones removed.
    Index {
        /// Folders or files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Search the index; prints the best chunks.
    Query {
        /// What to look for.
        text: String,
        /// How many hits.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Print JSON: {"hits":[...]}.
        #[arg(long)]
        json: bool,
    },
    /// Ask a question; streams an answer that cites the passages it used.
    Ask {
        /// The question.
        question: String,
        /// How many passages to give the generator.
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Print JSON: {"answer": ..., "citations": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API and web page (see --bind, --watch, --api-key).
    Serve,
    /// Measure retrieval quality and speed on a BEIR-format question set.
    Eval {
        /// Folder with corpus.jsonl, queries.jsonl and qrels/test.tsv.
        #[arg(long)]
        beir: PathBuf,
        /// Which retrievers to score.
        #[arg(long, value_enum, default_value = "all")]
        mode: crate::eval::EvalMode,
        /// Documents retrieved per query.
        #[arg(long, default_value_t = 100)]
        k: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Write the ranking as a TREC run file (FILE.<mode> for each mode with --mode all).
        #[arg(long)]
        run_out: Option<PathBuf>,
        /// Only measure embedding throughput on the first N documents (title + text, as
        /// shared/bench/pyref.py embeds them), without indexing.
        #[arg(long, value_name = "N")]
        embed_bench: Option<usize>,
    },
    /// Show what is indexed; asks the running server (at --bind) first, for its queue,
    /// activity and per-file problems.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the index against the files under PATHS and against itself: every indexable
    /// file indexed with its current text, nothing else indexed, no duplicate chunks, the
    /// vector store and text index in agreement. Exits 1 on any violation.
    Verify {
        /// Folders that were indexed or watched.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON: {"files":…, "chunks":…, "violations":[…]}.
        #[arg(long)]
        json: bool,
    },
}

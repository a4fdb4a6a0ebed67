//! The command line: what a user can type.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Index (or re-sync) folders or files: new and changed files are embedded, deleted ones removed.
    Index {
        /// Folders or files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the run's report as JSON: {"indexed", "unchanged", "skipped",
        /// "skipped_by_reason": {reason: count}, "removed", "chunks", "pages", "seconds"}.
        #[arg(long)]
        json: bool,
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
        /// Print JSON: {"answer", "abstained", "citations": [{n, path, start_line, end_line,
        /// text, verified}], ...}.
        #[arg(long)]
        json: bool,
        /// Answer as JSON that validates against this JSON Schema file (decoding is held to
        /// it by a grammar); the answer's `json` field holds it.
        #[arg(long, value_name = "FILE.json")]
        schema: Option<PathBuf>,
    },
    /// Serve the HTTP API and web page (see --bind, --watch, --api-key).
    Serve {
        /// A read-only query node of an index on object storage (`--data-dir s3://…`): it
        /// follows the table the writer commits to (every --follow-secs) and never writes.
        #[arg(long)]
        replica: bool,
    },
    /// Measure retrieval on a BEIR-format question set (--beir), or answers on a SQuAD-style
    /// open-book question set (--qa).
    Eval {
        /// Folder with corpus.jsonl, queries.jsonl and qrels/test.tsv.
        #[arg(long, required_unless_present = "qa", conflicts_with = "qa")]
        beir: Option<PathBuf>,
        /// Folder with corpus.jsonl, questions.jsonl and gold.json (shared/bench/squad2's
        /// layout): answers every question through the same path as POST /v1/ask.
        #[arg(long)]
        qa: Option<PathBuf>,
        /// With --qa: write {id: short answer, or "" when abstaining} (the official scorer's input).
        #[arg(long)]
        predictions_out: Option<PathBuf>,
        /// With --qa: write {id: the model's probability of a null answer} (the official
        /// scorer's --na-prob-file, from which it finds the best threshold; run with
        /// --abstain-threshold 1 so that every question gets its phrase).
        #[arg(long)]
        na_prob_out: Option<PathBuf>,
        /// With --qa: only N questions, half answerable and half not.
        #[arg(long)]
        limit: Option<usize>,
        /// With --qa: passages given to the generator per question.
        #[arg(long, default_value_t = crate::eval::qa::DEFAULT_PASSAGES)]
        passages: usize,
        /// With --qa: constrain decoding by the answer's schema (off only to measure the grammar's cost).
        #[arg(long, value_enum, default_value = "on")]
        grammar: crate::config::OnOff,
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
        /// Measure the stores at these sizes (e.g. 100000,300000,1000000 chunks), made from
        /// the index at --data-dir and queried with --beir's questions: recall@10 of vector
        /// search against exact search, hybrid p50/p99, write and index-build time, memory.
        #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
        scale_bench: Vec<usize>,
        /// With --scale-bench: keep the synthetic store in DIR and grow it from there on the
        /// next run (made from the same --data-dir), instead of writing every chunk again.
        #[arg(long, value_name = "DIR", requires = "scale_bench")]
        scale_dir: Option<PathBuf>,
    },
    /// Show what is indexed; asks the running server (at --bind) first, for its queue,
    /// activity and per-file problems.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the text sovrag indexes for each FILE (PDF, HTML, DOCX, ODT, PPTX, EPUB or
    /// text), with line numbers as citations give them and page or slide markers, to see why
    /// something is or is not found. Exits 1 if any file could not be read.
    Extract {
        /// The files, read one after another by the same worker, as indexing reads them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print JSON, a line per file: {"path", "format", "title", "page_name",
        /// "pages": [{page, start_line}], "headings": [{line, level, title}], "lines",
        /// "text"}, as `GET /v1/documents/{id}`; a file that could not be read is
        /// {"path", "error", "reason"}.
        #[arg(long)]
        json: bool,
    },
    /// Check this installation: models present and matching their pinned sha256, the ONNX
    /// Runtime and llama.cpp builds (CPU features, GPU offload), the data dir, the bind
    /// address and keys, and the sockets of every running sovrag. Exits 1 when a needed
    /// model is missing or altered.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Check that this object store (`s3://bucket/prefix`) keeps the conditional-PUT
        /// promises a shared index relies on, by racing writes against it; exits 1 if not.
        #[arg(long, value_name = "s3://BUCKET/PREFIX")]
        store: Option<String>,
    },
    /// What this installation did (tokens, answers, searches, CPU time per day, from the
    /// usage ledger) and what it would have cost on hosted APIs; the crossover point (SSCP),
    /// ZMCIT and the sovereignty score (PCS), each factor with its source.
    Report {
        /// The window: this many days up to today.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Print JSON (as `GET /v1/report`).
        #[arg(long)]
        json: bool,
        /// Print the built-in cost table (prices with their sources, electricity,
        /// hardware, frontier figure) to edit, and exit.
        #[arg(long)]
        costs_template: bool,
    },
    /// Rate a kept answer (its `answer_id`), optionally with the answer you wanted.
    Feedback {
        answer_id: String,
        #[arg(value_enum)]
        rating: crate::answers::Rating,
        /// The answer you would have wanted; it replaces the model's in `export finetune`.
        #[arg(long)]
        correction: Option<String>,
    },
    /// Remove kept answers from before DATE (YYYY-MM-DD) from the data dir.
    Forget {
        #[arg(long, value_name = "DATE")]
        before: String,
    },
    /// Write kept answers as training data.
    Export {
        #[command(subcommand)]
        what: Export,
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

#[derive(Debug, Subcommand)]
pub enum Export {
    /// Chat-format JSONL (`{"messages": [system, user with the passages, assistant]}`), the
    /// user's corrections replacing the model's answers: ready for common fine-tuning tools.
    Finetune {
        /// Which answers: `none` takes all but those rated down and not corrected; `up`
        /// only those rated up or corrected.
        #[arg(long, value_enum, default_value = "none")]
        min_rating: crate::answers::MinRating,
        /// The JSONL file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

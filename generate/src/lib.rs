//! Cited answers from retrieved passages, generated locally with llama.cpp.
//!
//! This crate owns everything between "here are the question and the numbered
//! passages retrieval found" and "here is the answer with its citations":
//!
//! - the prompts: the GGUF's own chat template with a fixed system message, or a
//!   completion prompt (`prompts/answer.txt`) for a model without one, and how passages
//!   are packed into the context window, counted with the model's own tokenizer;
//! - loading a GGUF model once, on a thread of its own that keeps one decoding context
//!   whose KV cache is reused across questions (the system prompt is read once);
//! - grammar-constrained decoding (`grammar`): an answer is sentences that each end with
//!   in-range markers `[n]`, or the fixed abstention; or JSON that matches a JSON Schema;
//! - verification (`verify`): each sentence is put back to the model as a yes/no question
//!   against the passages it cites; unsupported sentences are dropped, and an answer left
//!   with none abstains;
//! - citation resolution: `[n]` markers are checked against the passages that were in the
//!   prompt, and uncited sentences (possible only with the grammar off) are cited only
//!   where a passage lexically supports them; the stop rules for a base model.
//!
//! It does not retrieve (it is handed passages in rank order and never looks
//! at an index) and it does not speak HTTP; both belong to other sovrag crates.
#![deny(missing_docs)]

mod cite;
mod gate;
mod generator;
pub mod grammar;
mod prompt;
mod stop;
mod utf8;

use std::path::PathBuf;

pub use generator::{BackendInfo, Generator, backend_info};
pub use grammar::ABSTENTION;

/// What kind of answer to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AnswerKind {
    /// Sentences, each ending with the markers `[n]` of the passages that state it.
    #[default]
    Prose,
    /// The shortest phrase that answers the question (SQuAD-style), as JSON
    /// `{"answer": string|null, "citations": [n]}`; `answer` holds the phrase, or the
    /// abstention where the model's probability of null reaches
    /// [`AskOptions::abstain_threshold`].
    Short,
    /// JSON matching this JSON Schema (text), decoded under the grammar made from it.
    Schema(String),
}

/// Sampling settings: the next token is drawn from the `top_k` most likely (40), scaled by
/// `temperature`, cut to the smallest set whose probability reaches `top_p`, with a random
/// generator seeded by `seed` (the same seed, question and passages give the same answer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Above 0; lower is more conservative.
    pub temperature: f32,
    /// Nucleus cut, in (0, 1].
    pub top_p: f32,
    /// Seeds the random generator.
    pub seed: u64,
}

/// How to answer one question.
#[derive(Debug, Clone)]
pub struct AskOptions {
    /// What kind of answer.
    pub kind: AnswerKind,
    /// Prose: put each sentence back to the model as a yes/no question against the passages
    /// it cites (after a lexical test), and drop those it does not support. Short answers:
    /// the phrase must be copied from a passage, and is cited to the passages that hold it.
    pub verify: bool,
    /// Constrain decoding by the citation grammar (prose) or the schema (JSON). Off only
    /// to measure what the grammar costs.
    pub constrain: bool,
    /// Short answers: abstain where the model's probability of null reaches this; `None`
    /// takes [`GeneratorConfig::abstain_threshold`].
    pub abstain_threshold: Option<f32>,
    /// At most this many tokens of answer; `None` (or more than it) takes
    /// [`GeneratorConfig::max_answer_tokens`].
    pub max_tokens: Option<u32>,
    /// Sample instead of decoding greedily (OpenAI's `temperature`, `top_p`, `seed`); `None`,
    /// the default, keeps the answer deterministic. Short answers are always greedy.
    pub sampling: Option<Sampling>,
    /// Set it to stop the answer (its client went away): decoding stops at the next token
    /// and the answer fails with [`Error::Cancelled`].
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The answer ends where one of these first appears, without it (OpenAI's `stop`);
    /// a prose answer keeps the sentences finished before it. Not for short answers.
    pub stop: Vec<String>,
}

impl Default for AskOptions {
    fn default() -> Self {
        Self {
            kind: AnswerKind::Prose,
            verify: true,
            constrain: true,
            abstain_threshold: None,
            max_tokens: None,
            sampling: None,
            cancel: None,
            stop: Vec::new(),
        }
    }
}

/// One retrieved passage: a span of lines from a source file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Passage {
    /// Path of the source file, as shown to the model and to the user.
    pub path: String,
    /// The indexed document's id, for a citation to link to; empty when there is none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub doc_id: String,
    /// First line of the span, 1-based.
    pub start_line: u32,
    /// Last line of the span, inclusive.
    pub end_line: u32,
    /// The text of the span.
    pub text: String,
    /// The page (PDF) or slide (PPTX) the span starts on, shown to the user, not the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The heading path the span sits under, shown to the user, not the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
}

/// The citation markers of an answer: each marker's byte range in `text` and the passage
/// numbers it names (`[1, 2]` names two).
pub fn citation_markers(text: &str) -> Vec<(std::ops::Range<usize>, Vec<u32>)> {
    cite::markers(text)
        .into_iter()
        .map(|m| (m.start..m.end, m.numbers))
        .collect()
}

/// The system message and the user's turn that a chat-template generator reads for a prose
/// answer to `question` from `passages` (numbered from 1): the shape a fine-tuning example
/// of sovrag's answers takes.
pub fn prose_chat(question: &str, passages: &[Passage]) -> (String, String) {
    (
        prompt::SYSTEM_PROSE.to_owned(),
        prompt::user_turn(&prompt::blocks(&prompt::passage_block, passages), question),
    )
}

/// The default [`GeneratorConfig::focus_words`]: whole passages. Focusing them (45 words:
/// the sentences that hold the answer for 96% of SQuAD 2.0's answerable questions) brings
/// the first token sooner and answers better when there is an answer, but the model then
/// tells unanswerable questions apart less well (SQuAD 2.0 bench, all 400 questions: first
/// token 3.2 s against 5.4 s, HasAns F1 never abstaining 78.0 against 72.8, but F1 at the
/// default threshold 60.6 against 63.4), so it is a choice for collections where questions
/// are answerable.
pub const DEFAULT_FOCUS_WORDS: usize = 0;

/// The default [`GeneratorConfig::abstain_threshold`], chosen for the default model on
/// questions held out of the figures reported for it (see the guide's answers page).
pub const DEFAULT_ABSTAIN_THRESHOLD: f32 = 0.02;

/// How to load the model and how much it may generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Path of the GGUF model file.
    pub model_path: PathBuf,
    /// Context window in tokens: prompt and answer together.
    pub n_ctx: u32,
    /// Layers offloaded to the GPU (needs the `cuda` or `metal` feature); 0 runs on the CPU.
    pub n_gpu_layers: u32,
    /// Most tokens one answer may generate; also reserved out of `n_ctx` when packing.
    pub max_answer_tokens: u32,
    /// CPU threads for decoding; `None` uses all available cores.
    pub threads: Option<i32>,
    /// Sampler seed. Decoding is currently greedy, so the output depends on
    /// the prompt alone and the seed has no effect; it is part of the config so
    /// that a stochastic sampler can be added without changing the API.
    pub seed: u32,
    /// Prompt through the GGUF's chat template when it has one; false always uses the
    /// completion prompt (as for a GGUF without a template).
    pub use_chat_template: bool,
    /// [`AnswerKind::Short`] abstains where the model's probability of a `null` answer is at
    /// least this. Well below one half: a small model, asked for a phrase, rarely picks null
    /// itself even when the passages do not answer, but it puts more weight on it then.
    pub abstain_threshold: f32,
    /// Each passage is shown to the model as its sentences that bear on the question, up to
    /// about this many words (see `prompt::focus`); 0 shows passages whole. Citations and
    /// verification keep the whole passage.
    pub focus_words: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            model_path: PathBuf::new(),
            n_ctx: 4096,
            n_gpu_layers: 0,
            max_answer_tokens: 200,
            threads: None,
            seed: 0,
            use_chat_template: true,
            abstain_threshold: DEFAULT_ABSTAIN_THRESHOLD,
            focus_words: DEFAULT_FOCUS_WORDS,
        }
    }
}

/// A generated answer and where its claims come from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    /// The id the answer was kept under (sovrag's answer log), for feedback; `None` when it
    /// was not kept.
    #[serde(rename = "answer_id", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The answer text, with `[n]` markers that all resolve to `citations`.
    pub answer: String,
    /// The passages cited in the answer, once each, in order of first citation.
    pub citations: Vec<Citation>,
    /// Marker numbers the model produced that name no passage in the prompt;
    /// they were removed from `answer`.
    pub dropped_markers: Vec<u32>,
    /// Passages that went into the prompt (numbered `1..=passages_used`).
    pub passages_used: usize,
    /// Passages that did not fit in the context window.
    pub passages_left_out: usize,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens the model generated.
    pub generated_tokens: usize,
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// The passages did not hold the answer: `answer` is [`ABSTENTION`], `citations` is
    /// empty, and `sources` lists the closest passages.
    pub abstained: bool,
    /// When abstaining, the passages that came closest (the best few in the prompt).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Citation>,
    /// The JSON answer, for [`AnswerKind::Schema`] and [`AnswerKind::Short`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// What verification did, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// [`AnswerKind::Short`]: the model's probability that the answer is `null` (the
    /// passages do not say), read where the JSON's `"answer"` value begins. The answer
    /// abstains at [`GeneratorConfig::abstain_threshold`] and above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_probability: Option<f32>,
    /// Where the time went.
    pub timings: Timings,
}

/// What verification did to an answer.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    /// Claims checked (sentences, or the short answer).
    pub checked: usize,
    /// Claims the model did not find in the passages they cite; dropped from the answer.
    pub dropped: Vec<String>,
    /// Claims not in the passages they cited but, word for word, in another passage: kept,
    /// citing that one.
    pub recited: usize,
    /// Seconds the checks took.
    pub seconds: f64,
}

/// Where one answer's time went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    /// Prompt tokens actually run through the model; the rest came from the KV cache.
    pub prompt_tokens_evaluated: usize,
    /// Seconds reading the prompt.
    pub prefill_seconds: f64,
    /// Seconds generating.
    pub decode_seconds: f64,
    /// Seconds of `decode_seconds` spent asking the grammar.
    pub grammar_seconds: f64,
    /// Steps on which the greedy token broke the grammar, so every token was checked.
    pub grammar_full_checks: usize,
    /// Seconds from the request to the first streamed piece of answer.
    pub first_token_seconds: f64,
}
/// A passage that the answer cites.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Citation {
    /// The marker number, `[n]` in the answer.
    pub n: u32,
    /// Path of the source file.
    pub path: String,
    /// The indexed document's id (`GET /v1/documents/{doc_id}` shows its text).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub doc_id: String,
    /// First line of the cited span.
    pub start_line: u32,
    /// Last line of the cited span (earlier than the passage's own when the
    /// passage had to be cut to fit the context).
    pub end_line: u32,
    /// Text of the cited span, as the model saw it.
    pub text: String,
    /// The page (PDF) or slide (PPTX) the span starts on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The heading path the span sits under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    /// Verification found the claims citing this passage in it. False when verification
    /// is off.
    pub verified: bool,
}

/// Why the model stopped generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model ended the answer: an end-of-generation token, or it began a
    /// new "Question:" or passage header (a new example), which was cut.
    EndOfText,
    /// A blank line after answer text; base models ramble on past it.
    BlankLine,
    /// A line repeated an earlier line of the answer; the repeat was cut.
    RepeatedLine,
    /// `max_answer_tokens` were generated.
    TokenCap,
    /// The context window filled up.
    ContextFull,
    /// [`AskOptions::cancel`] was set.
    Cancelled,
    /// One of [`AskOptions::stop`] appeared; the answer ends before it.
    StopSequence,
}

/// What can go wrong loading the model or answering.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The model file does not exist.
    #[error("model file not found: {}", path.display())]
    ModelNotFound {
        /// The configured model path.
        path: PathBuf,
    },
    /// The model file could not be read.
    #[error("cannot read model file {}: {source}", path.display())]
    ModelRead {
        /// The configured model path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a GGUF model.
    #[error("{} is not a GGUF model file (no GGUF magic at its start)", path.display())]
    NotGguf {
        /// The configured model path.
        path: PathBuf,
    },
    /// llama.cpp refused to load the model.
    #[error("llama.cpp could not load model {}: {source}", path.display())]
    ModelLoad {
        /// The configured model path.
        path: PathBuf,
        /// llama.cpp's error.
        source: llama_cpp_2::LlamaModelLoadError,
    },
    /// The llama.cpp backend could not be initialised.
    #[error("llama.cpp backend initialisation failed: {0}")]
    Backend(String),
    /// The configuration cannot work.
    #[error("invalid generator config: {0}")]
    Config(String),
    /// No passages were given, so there is nothing to ground an answer in.
    #[error("no passages to answer from")]
    NoPassages,
    /// The question and prompt template alone overflow the context window.
    #[error(
        "question too long: the prompt needs {needed} tokens before any passage, \
         but only {budget} fit beside the answer"
    )]
    PromptTooLong {
        /// Tokens the prompt needs without passages.
        needed: usize,
        /// Tokens available for the prompt.
        budget: usize,
    },
    /// llama.cpp could not create a decoding context.
    #[error("llama.cpp could not create a context of {n_ctx} tokens: {source}")]
    Context {
        /// The requested context size.
        n_ctx: u32,
        /// llama.cpp's error.
        source: llama_cpp_2::LlamaContextLoadError,
    },
    /// llama.cpp failed while decoding.
    #[error("llama.cpp decode failed while {stage}: {source}")]
    Decode {
        /// What was being decoded.
        stage: &'static str,
        /// llama.cpp's error.
        source: llama_cpp_2::DecodeError,
    },
    /// A token did not fit in a llama.cpp batch.
    #[error("llama.cpp batch error: {0}")]
    Batch(#[from] llama_cpp_2::llama_batch::BatchAddError),
    /// A JSON Schema (or the grammar made from it) that decoding cannot be held to.
    #[error("invalid schema: {0}")]
    Schema(String),
    /// The answer hit the token cap before its JSON was complete.
    #[error(
        "the answer reached {0} tokens before its JSON was complete; raise max_answer_tokens or simplify the schema"
    )]
    Truncated(u32),
    /// The answer was stopped through [`AskOptions::cancel`].
    #[error("the answer was cancelled")]
    Cancelled,
    /// The generator's thread is gone (it panicked); the model must be loaded again.
    #[error("the generator stopped working; restart sovrag")]
    WorkerGone,
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

//! Loading the GGUF model and decoding answers with llama.cpp.
//!
//! The model and one decoding context live on a thread of their own: a context borrows its
//! model, and keeping both in one place lets the context, and its KV cache, outlive a
//! single answer. Each prompt is compared with the tokens the cache already holds and only
//! the new tail is read, so the system message, and for verification the whole answer
//! prompt, is read once. Answers are made one at a time, which on a CPU is also the
//! fastest way to make several: two decodes in parallel share the same cores.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LogOptions, send_logs_to_tracing};

use crate::gate::Gate;
use crate::grammar::{self, ABSTENTION, Constraint};
use crate::prompt::{self, Template};
use crate::stop::{StopRules, StopStrings};
use crate::utf8::Utf8Stream;
use crate::{
    Answer, AnswerKind, AskOptions, Error, GeneratorConfig, Passage, Result, StopReason, Timings,
    Verification, cite,
};

/// Tokens kept free beyond prompt and answer: the BOS token, and slack for
/// the prompt's real token count differing from the count used to pack it.
const CONTEXT_MARGIN: u32 = 16;

/// Tokens kept free for a verification question after the answer.
const VERIFY_RESERVE: u32 = 160;

/// The smallest context that leaves room for a prompt worth sending.
const MIN_PROMPT_TOKENS: u32 = 64;

/// A short answer is a phrase; its JSON never needs more.
const SHORT_ANSWER_TOKENS: u32 = 64;

/// Lexical support below which a claim is dropped without asking the model: most of what it
/// says is not in its passage.
const LEXICAL_UNSUPPORTED: f64 = 0.3;

/// The KV-cache sequence answers are decoded in.
const SEQ_ANSWER: usize = 0;
/// Prompt tokens read per slice when the request can be cancelled (see `Worker::append`):
/// about 4 s of the 1.5B's prefill on two cores.
const CANCELLABLE_BATCH: usize = 256;

/// Longest rewritten question, in tokens.
const REWRITE_TOKENS: u32 = 64;
/// Conversation given to a rewrite: at most this many characters of earlier turns, each
/// cut to [`REWRITE_TURN_CHARS`].
const REWRITE_HISTORY_CHARS: usize = 3000;
const REWRITE_TURN_CHARS: usize = 1000;

/// The KV-cache sequence verification questions are read in.
const SEQ_CHECK: usize = 1;

/// Passages listed as the closest sources when an answer abstains.
const CLOSEST_SOURCES: usize = 3;

/// llama.cpp's backend is process-global and refuses a second `init`, so every
/// `Generator` shares this one, set up on first use and never torn down.
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // Before init, so that init's own messages go to tracing too
            // rather than to stderr, where they would drown the server's logs.
            send_logs_to_tracing(LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Backend(e.clone()))
}

/// What llama.cpp was built with and runs on, for `sovrag doctor`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendInfo {
    /// Whether layers can be offloaded to a GPU (a CUDA or Metal build with a device).
    pub gpu_offload: bool,
    /// The compute devices llama.cpp sees: `backend: description`.
    pub devices: Vec<String>,
}

/// Sets up llama.cpp's backend (once per process) and describes it.
pub fn backend_info() -> Result<BackendInfo> {
    let backend = backend()?;
    Ok(BackendInfo {
        gpu_offload: backend.supports_gpu_offload(),
        devices: llama_cpp_2::list_llama_ggml_backend_devices()
            .into_iter()
            .map(|d| format!("{}: {}", d.backend, d.description))
            .collect(),
    })
}

/// Work for the model's thread.
type Job = Box<dyn for<'m> FnOnce(&mut Worker<'m>) + Send>;

/// What the model's thread sends back while answering.
enum Event {
    Piece(String),
    Done(Box<Result<Answer>>),
}

/// A loaded model that answers questions from passages.
///
/// Load it once and share it (`Arc<Generator>`): loading reads the whole model. Answers
/// are made one at a time on the model's own thread.
pub struct Generator {
    jobs: mpsc::Sender<Job>,
    cfg: GeneratorConfig,
    chat: bool,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("cfg", &self.cfg)
            .field("chat", &self.chat)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Loads the GGUF model named by `cfg.model_path`.
    ///
    /// # Errors
    ///
    /// If the file is missing, unreadable or not a GGUF model, if llama.cpp
    /// cannot load it, or if `cfg` leaves no room for a prompt.
    pub fn load(cfg: GeneratorConfig) -> Result<Self> {
        check_gguf(&cfg.model_path)?;
        if cfg.n_ctx < cfg.max_answer_tokens + CONTEXT_MARGIN + MIN_PROMPT_TOKENS {
            return Err(Error::Config(format!(
                "n_ctx {} leaves no room for a prompt beside max_answer_tokens {}",
                cfg.n_ctx, cfg.max_answer_tokens
            )));
        }
        if cfg.max_answer_tokens == 0 {
            return Err(Error::Config("max_answer_tokens must be at least 1".into()));
        }
        let threads = match cfg.threads {
            Some(t) if t > 0 => t,
            Some(t) => return Err(Error::Config(format!("threads must be positive, got {t}"))),
            None => std::thread::available_parallelism()
                .ok()
                .and_then(|n| i32::try_from(n.get()).ok())
                .unwrap_or(1),
        };
        let backend = backend()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<Result<bool>>();
        let worker_cfg = cfg.clone();
        std::thread::Builder::new()
            .name("sovrag-generator".into())
            .spawn(move || run_worker(backend, &worker_cfg, threads, &queue, &ready_tx))
            .map_err(|e| Error::Backend(format!("cannot start the generator thread: {e}")))?;
        let chat = ready.recv().map_err(|_| Error::WorkerGone)??;
        Ok(Self { jobs, cfg, chat })
    }

    /// Whether the model is prompted through its own chat template (else as a completion).
    pub fn uses_chat_template(&self) -> bool {
        self.chat
    }

    /// Runs `f` on the model's thread (tests reach the worker's parts through this).
    #[cfg(test)]
    fn with_worker<T: Send + 'static>(
        &self,
        f: impl for<'m> FnOnce(&mut Worker<'m>) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |w: &mut Worker<'_>| {
            let _ = tx.send(f(w));
        });
        self.jobs.send(job).expect("generator thread");
        rx.recv().expect("generator thread answered")
    }

    /// Answers `question` from `passages` (in rank order), calling `on_token`
    /// with each piece of answer text as it is generated.
    ///
    /// The streamed text is the draft as the model wrote it; the returned
    /// [`Answer::answer`] is authoritative: verified, with citations checked.
    ///
    /// # Errors
    ///
    /// If `passages` is empty, if the question alone overflows the context,
    /// if a schema cannot be turned into a grammar, or if llama.cpp fails.
    pub fn answer(
        &self,
        question: &str,
        passages: &[Passage],
        opts: &AskOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Answer> {
        let (events, received) = mpsc::channel::<Event>();
        let (question, passages, opts) = (question.to_owned(), passages.to_vec(), opts.clone());
        let job: Job = Box::new(move |w: &mut Worker<'_>| {
            let pieces = events.clone();
            let result = w.answer(&question, &passages, &opts, &mut |s: &str| {
                let _ = pieces.send(Event::Piece(s.to_owned()));
            });
            let _ = events.send(Event::Done(Box::new(result)));
        });
        self.jobs.send(job).map_err(|_| Error::WorkerGone)?;
        for event in received {
            match event {
                Event::Piece(s) => on_token(&s),
                Event::Done(result) => return *result,
            }
        }
        Err(Error::WorkerGone)
    }
}

impl Generator {
    /// `last`, a follow-up in a conversation (`history`: earlier `(role, text)` turns,
    /// oldest first), rewritten by the model as a standalone question, so that search finds
    /// what it is about ("and on Windows?" after a question on installing). `None` for a
    /// model without a chat template, or when the model wrote nothing usable; with the
    /// prompt and generated tokens it took.
    pub fn rewrite_question(
        &self,
        history: &[(String, String)],
        last: &str,
    ) -> Result<(Option<String>, usize, usize)> {
        let (done, received) = mpsc::channel();
        let (history, last) = (history.to_vec(), last.to_owned());
        let job: Job = Box::new(move |w: &mut Worker<'_>| {
            let _ = done.send(w.rewrite(&history, &last));
        });
        self.jobs.send(job).map_err(|_| Error::WorkerGone)?;
        received.recv().map_err(|_| Error::WorkerGone)?
    }
}

/// The model's thread: loads the model, reports readiness, then runs jobs until the
/// `Generator` is dropped.
fn run_worker(
    backend: &'static LlamaBackend,
    cfg: &crate::GeneratorConfig,
    threads: i32,
    queue: &mpsc::Receiver<Job>,
    ready: &mpsc::Sender<Result<bool>>,
) {
    let started = Instant::now();
    let params = LlamaModelParams::default().with_n_gpu_layers(cfg.n_gpu_layers);
    let model = match LlamaModel::load_from_file(backend, &cfg.model_path, &params) {
        Ok(m) => m,
        Err(source) => {
            let _ = ready.send(Err(Error::ModelLoad {
                path: cfg.model_path.clone(),
                source,
            }));
            return;
        }
    };
    let mut worker = match Worker::new(backend, &model, cfg, threads) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    tracing::info!(
        model = %cfg.model_path.display(),
        n_ctx = cfg.n_ctx,
        n_gpu_layers = cfg.n_gpu_layers,
        threads,
        chat_template = worker.chat.is_some(),
        secs = started.elapsed().as_secs_f32(),
        "loaded generation model"
    );
    if ready.send(Ok(worker.chat.is_some())).is_err() {
        return;
    }
    for job in queue {
        // A panic in one answer must not take the model away from the next: forget what
        // the cache holds (it may be half-written) and go on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut worker))).is_err() {
            tracing::error!("the generator panicked while answering; its cache was reset");
            worker.forget();
        }
    }
}

/// The model, its one context, and what the context's KV cache holds.
struct Worker<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// Per sequence ([`SEQ_ANSWER`], [`SEQ_CHECK`]), the tokens whose keys and values are in
    /// the cache, from position 0.
    cached: [Vec<LlamaToken>; 2],
    cfg: crate::GeneratorConfig,
    /// The model's chat template, when it has one that llama.cpp can apply.
    chat: Option<LlamaChatTemplate>,
    completion: Template,
    /// First tokens of "yes"/"Yes" and of "no"/"No", for the verification question.
    yes: Vec<LlamaToken>,
    no: Vec<LlamaToken>,
    /// The tokens that start `null` and those that start a JSON string (`"`, ` "`, …), for
    /// a short answer's choice; found on first use (a pass over the vocabulary).
    choices: Option<(Vec<LlamaToken>, Vec<LlamaToken>)>,
    /// The answer in progress stops when this is set (`AskOptions::cancel`).
    cancel: Option<Arc<AtomicBool>>,
    /// Draws tokens when the request asked for sampling; greedy otherwise.
    sampler: Option<grammar::Sampler>,
    /// The answer in progress ends at these (`AskOptions::stop`).
    stops: Vec<String>,
}

/// What one decode produced.
struct Generated {
    text: String,
    tokens: usize,
    stop_reason: StopReason,
}

impl<'m> Worker<'m> {
    fn new(
        backend: &LlamaBackend,
        model: &'m LlamaModel,
        cfg: &crate::GeneratorConfig,
        threads: i32,
    ) -> Result<Self> {
        let n_ctx = NonZeroU32::new(cfg.n_ctx)
            .ok_or_else(|| Error::Config("n_ctx must be positive".into()))?;
        // Two sequences in one cache: answers, which keep their prefix (system message and
        // examples) between questions, and verification questions, which keep theirs between
        // the checks of one answer.
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_seq_max(2)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .new_context(backend, params)
            .map_err(|source| Error::Context {
                n_ctx: cfg.n_ctx,
                source,
            })?;
        let n_batch = usize::try_from(ctx.n_batch()).unwrap_or(512).max(1);
        let chat = if cfg.use_chat_template {
            usable_chat_template(model)
        } else {
            None
        };
        let vocab = model.vocab();
        let first = |words: &[&str]| -> Vec<LlamaToken> {
            let mut v: Vec<LlamaToken> = words
                .iter()
                .filter_map(|w| vocab.tokenize(w.as_bytes(), false, false).first().copied())
                .collect();
            v.dedup();
            v
        };
        let (yes, no) = (
            first(&["yes", "Yes", " yes", " Yes"]),
            first(&["no", "No", " no", " No"]),
        );
        Ok(Self {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            cached: [Vec::new(), Vec::new()],
            cfg: cfg.clone(),
            chat,
            completion: Template::answer(),
            yes,
            no,
            choices: None,
            cancel: None,
            sampler: None,
            stops: Vec::new(),
        })
    }

    /// Drops what sequence `seq` of the cache holds from position `keep` on; returns how
    /// much it still holds: `keep`, or 0 where the model's memory cannot drop a tail
    /// (recurrent models), which empties the sequence instead.
    fn truncate(&mut self, seq: usize, keep: usize) -> usize {
        if keep >= self.cached[seq].len() {
            return self.cached[seq].len();
        }
        let s = u32::try_from(seq).unwrap_or(0);
        let p0 = u32::try_from(keep).unwrap_or(u32::MAX);
        let kept = if self
            .ctx
            .clear_kv_cache_seq(Some(s), Some(p0), None)
            .unwrap_or(false)
        {
            keep
        } else if self
            .ctx
            .clear_kv_cache_seq(Some(s), None, None)
            .unwrap_or(false)
        {
            0
        } else {
            self.forget();
            return 0;
        };
        self.cached[seq].truncate(kept);
        kept
    }

    /// Empties the verification sequence before a prompt is read into the answer's. Cells it
    /// holds change where the prompt's new tokens land in the cache, and with that the last
    /// digits of the logits (p(null) by 5% on the tiny model): the same question would then
    /// abstain, or decode, differently depending on what was verified before it. It also
    /// leaves the answer the whole context. Its cache only saves re-reading a verification's
    /// short system message, which the checks of one answer still share.
    fn empty_check(&mut self) {
        self.truncate(SEQ_CHECK, 0);
    }

    /// Drops everything the cache holds (after a failure left it in an unknown state).
    fn forget(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached = [Vec::new(), Vec::new()];
    }

    /// The prompt for `messages` (role, text) through the model's chat template; `None`
    /// without one, where callers write a completion prompt instead.
    fn chat_prompt(&self, messages: &[(&str, &str)]) -> Option<String> {
        let tmpl = self.chat.as_ref()?;
        let msgs: Vec<LlamaChatMessage> = messages
            .iter()
            .filter_map(|(role, text)| {
                LlamaChatMessage::new((*role).to_owned(), text.replace('\0', " ")).ok()
            })
            .collect();
        self.model.apply_chat_template(tmpl, &msgs, true).ok()
    }

    fn tokenize(&self, prompt: &str) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        // A chat template may write the BOS token itself; do not add a second one.
        let bos_written = vocab
            .text(vocab.bos())
            .and_then(|t| t.to_str().ok())
            .is_some_and(|t| !t.is_empty() && prompt.starts_with(t));
        vocab.tokenize(prompt.as_bytes(), !bos_written, self.chat.is_some())
    }

    fn answer(
        &mut self,
        question: &str,
        passages: &[Passage],
        opts: &AskOptions,
        emit: &mut dyn FnMut(&str),
    ) -> Result<Answer> {
        self.cancel = opts.cancel.clone();
        self.sampler = opts
            .sampling
            .filter(|_| opts.kind != AnswerKind::Short)
            .map(grammar::Sampler::new);
        self.stops = if opts.kind == AnswerKind::Short {
            Vec::new()
        } else {
            opts.stop.clone()
        };
        if opts.kind == AnswerKind::Short {
            return self.answer_short(question, passages, opts, emit);
        }
        let asked = Instant::now();
        let system = match &opts.kind {
            AnswerKind::Schema(_) => prompt::SYSTEM_SCHEMA,
            _ => prompt::SYSTEM_PROSE,
        };
        let cap = opts.max_tokens.map_or(self.cfg.max_answer_tokens, |m| {
            m.clamp(1, self.cfg.max_answer_tokens)
        });
        let reserve = if opts.verify { VERIFY_RESERVE } else { 0 };
        let budget = self
            .cfg
            .n_ctx
            .saturating_sub(cap + CONTEXT_MARGIN + reserve)
            .max(MIN_PROMPT_TOKENS);
        let vocab = self.model.vocab();
        let special = self.chat.is_some();
        let count = |s: &str| vocab.tokenize(s.as_bytes(), false, special).len();
        let render = |blocks: &str, q: &str| {
            let user = prompt::user_turn(blocks, q);
            self.chat_prompt(&[("system", system), ("user", &user)])
                .unwrap_or_else(|| self.completion.render(blocks, q))
        };
        let focused = |n: usize, p: &Passage| {
            prompt::passage_block(n, &prompt::focused(p, question, self.cfg.focus_words))
        };
        let packed = prompt::pack_with(
            &focused,
            &render,
            question,
            passages,
            budget as usize,
            &count,
        )?;
        if packed.left_out > 0 {
            tracing::info!(
                used = packed.passages.len(),
                left_out = packed.left_out,
                "passages left out: context window full"
            );
        }
        let n = packed.passages.len();
        let grammar_text = match (&opts.kind, opts.constrain) {
            (_, false) => None,
            (AnswerKind::Schema(s), true) => Some(grammar::schema_grammar(s)?),
            (_, true) => Some(grammar::citation_grammar(n)),
        };
        let constraint = grammar_text
            .as_deref()
            .map(|g| Constraint::new(self.model, g))
            .transpose()?;
        let tokens = self.tokenize(&packed.prompt);
        self.empty_check();
        let mut timings = Timings::default();
        let mut first_piece: Option<f64> = None;
        // Prose streams through the gate: only what the final answer will hold is sent.
        let prose = opts.kind == AnswerKind::Prose;
        let mut gate = Gate::new(opts.verify.then_some(&packed.passages[..]));
        let generated =
            self.generate(&tokens, constraint, cap as usize, &mut timings, &mut |s| {
                first_piece.get_or_insert_with(|| asked.elapsed().as_secs_f64());
                if !prose {
                    emit(s);
                    return;
                }
                let now = gate.push(s);
                if !now.is_empty() {
                    emit(&now);
                }
            })?;
        timings.first_token_seconds = first_piece.unwrap_or_default();
        if generated.stop_reason == StopReason::Cancelled {
            return Err(Error::Cancelled);
        }
        tracing::debug!(
            prompt_tokens = tokens.len(),
            generated_tokens = generated.tokens,
            stop_reason = ?generated.stop_reason,
            "generated answer"
        );

        let mut answer = Answer {
            id: None,
            generated_tokens: generated.tokens,
            stop_reason: generated.stop_reason,
            timings,
            ..blank_answer(n, packed.left_out, tokens.len())
        };
        match &opts.kind {
            AnswerKind::Prose | AnswerKind::Short => {
                let draft = if opts.constrain {
                    grammar::complete_prefix(generated.text.trim(), n).to_owned()
                } else {
                    generated.text.trim().to_owned()
                };
                let draft = if opts.verify && draft != ABSTENTION && !draft.is_empty() {
                    let (kept, v) = self.verify_sentences(&packed.passages, &draft)?;
                    answer.verification = Some(v);
                    kept
                } else {
                    draft
                };
                if draft.is_empty() || draft == ABSTENTION {
                    abstain(&mut answer, &packed.passages);
                } else {
                    let (text, mut citations, dropped) =
                        cite::resolve_citations(&draft, &packed.passages);
                    for c in &mut citations {
                        c.verified = answer.verification.is_some();
                    }
                    answer.answer = text;
                    answer.citations = citations;
                    answer.dropped_markers = dropped;
                }
                let rest = gate.finish(&answer.answer);
                if !rest.is_empty() {
                    emit(&rest);
                }
            }
            AnswerKind::Schema(_) => {
                let text = generated.text.trim();
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(v) => answer.json = Some(v),
                    Err(_) if generated.stop_reason == StopReason::TokenCap => {
                        return Err(Error::Truncated(cap));
                    }
                    Err(_) => {}
                }
                answer.answer = text.to_owned();
            }
        }
        Ok(answer)
    }

    /// A short answer: the phrase that answers the question, or null, as JSON
    /// `{"answer": …, "citations": […]}`. The prompt ends with `{"answer":`, so the model's
    /// next token is its choice between a phrase and null; where the probability of null
    /// reaches [`GeneratorConfig::abstain_threshold`] the answer abstains without decoding,
    /// else the phrase is decoded under a grammar that allows only a phrase and citations.
    /// Verification checks that the phrase is copied from a passage and cites the passages
    /// that hold it.
    fn answer_short(
        &mut self,
        question: &str,
        passages: &[Passage],
        opts: &AskOptions,
        emit: &mut dyn FnMut(&str),
    ) -> Result<Answer> {
        let asked = Instant::now();
        let cap = self.cfg.max_answer_tokens.min(SHORT_ANSWER_TOKENS);
        let budget = self
            .cfg
            .n_ctx
            .saturating_sub(cap + CONTEXT_MARGIN)
            .max(MIN_PROMPT_TOKENS);
        let examples = prompt::short_examples();
        let render = |blocks: &str, q: &str| {
            let user = prompt::short_user_turn(blocks, q);
            let mut turns = vec![("system", prompt::SYSTEM_SHORT)];
            for (u, a) in &examples {
                turns.push(("user", u.as_str()));
                turns.push(("assistant", a.as_str()));
            }
            turns.push(("user", &user));
            let head = self.chat_prompt(&turns).unwrap_or_else(|| {
                let shots: String = examples
                    .iter()
                    .map(|(u, a)| format!("{u}\nAnswer: {a}\n\n"))
                    .collect();
                format!("{}\n\n{shots}{user}\nAnswer: ", prompt::SYSTEM_SHORT.trim())
            });
            format!("{head}{}", prompt::SHORT_PREFIX)
        };
        let vocab = self.model.vocab();
        let special = self.chat.is_some();
        let count = |s: &str| vocab.tokenize(s.as_bytes(), false, special).len();
        let focused = |n: usize, p: &Passage| {
            prompt::bare_block(n, &prompt::focused(p, question, self.cfg.focus_words))
        };
        let packed = prompt::pack_with(
            &focused,
            &render,
            question,
            passages,
            budget as usize,
            &count,
        )?;
        let n = packed.passages.len();
        let tokens = self.tokenize(&packed.prompt);
        let n_ctx = usize::try_from(self.cfg.n_ctx).unwrap_or(usize::MAX);
        self.empty_check();
        let mut timings = Timings::default();
        let mut answer = blank_answer(n, packed.left_out, tokens.len());
        if tokens.len() >= n_ctx {
            answer.stop_reason = StopReason::ContextFull;
            abstain(&mut answer, &packed.passages);
            return Ok(answer);
        }
        let idx = self.prefill(SEQ_ANSWER, &tokens, &mut timings)?;
        let p_null = self.null_probability(idx);
        answer.null_probability = Some(p_null);
        emit(prompt::SHORT_PREFIX);
        timings.first_token_seconds = asked.elapsed().as_secs_f64();
        let threshold = opts.abstain_threshold.unwrap_or(self.cfg.abstain_threshold);
        if opts.constrain && p_null >= threshold {
            let rest = " null, \"citations\": []}";
            emit(rest);
            answer.json = serde_json::from_str(&format!("{}{rest}", prompt::SHORT_PREFIX)).ok();
            answer.timings = timings;
            abstain(&mut answer, &packed.passages);
            return Ok(answer);
        }
        let constraint = if opts.constrain {
            Some(Constraint::new(
                self.model,
                &grammar::short_phrase_grammar(n),
            )?)
        } else {
            None
        };
        let generated = self.decode(idx, constraint, cap as usize, &mut timings, emit)?;
        if generated.stop_reason == StopReason::Cancelled {
            return Err(Error::Cancelled);
        }
        answer.generated_tokens = generated.tokens;
        answer.stop_reason = generated.stop_reason;
        answer.timings = timings;
        let text = format!("{} {}", prompt::SHORT_PREFIX, generated.text.trim());
        answer.json = serde_json::from_str(&text).ok();
        let (phrase, cited) = parse_short(&text, n);
        let found = match phrase {
            Some(p) if opts.verify => {
                let started = Instant::now();
                let copy = cite::copied(&packed.passages, &p, &cited);
                answer.verification = Some(Verification {
                    checked: 1,
                    dropped: if copy.is_none() {
                        vec![p.clone()]
                    } else {
                        Vec::new()
                    },
                    recited: usize::from(copy.as_ref().is_some_and(|(_, h)| *h != cited)),
                    seconds: started.elapsed().as_secs_f64(),
                });
                if copy.is_none() {
                    tracing::info!(phrase = %p, "verification: the phrase is in no passage; abstaining");
                }
                // Verified, the answer quotes the passage: the words as it has them.
                copy
            }
            Some(p) => Some((p, cited)),
            None => None,
        };
        match found {
            Some((p, cited)) => {
                // The JSON says what the answer says (verified, the passage's own words).
                if let Some(v) = answer.json.as_mut().and_then(|v| v.get_mut("answer")) {
                    *v = serde_json::Value::from(p.as_str());
                }
                answer.answer = p;
                answer.citations = cited
                    .iter()
                    .filter_map(|&k| cite::citation(&packed.passages, k, opts.verify))
                    .collect();
            }
            None => abstain(&mut answer, &packed.passages),
        }
        Ok(answer)
    }

    /// The model's probability that the next token starts `null` rather than a string,
    /// out of the two: what it gives the tokens of each kind at output `idx`.
    fn null_probability(&mut self, idx: i32) -> f32 {
        if self.choices.is_none() {
            self.choices = Some(choice_tokens(self.model));
        }
        let Some((nulls, quotes)) = self.choices.as_ref() else {
            return 0.0;
        };
        let logits = self.ctx.get_logits_ith(idx);
        let get = |t: &LlamaToken| logits.get(usize::try_from(t.0).ok()?).copied();
        let max = nulls
            .iter()
            .chain(quotes)
            .filter_map(get)
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return 0.0;
        }
        let mass = |ts: &[LlamaToken]| {
            ts.iter()
                .filter_map(get)
                .map(|l| (l - max).exp())
                .sum::<f32>()
        };
        let (null, quote) = (mass(nulls), mass(quotes));
        if null + quote > 0.0 {
            null / (null + quote)
        } else {
            0.0
        }
    }

    /// Puts each sentence of `draft` to the model against the passages it cites; returns the
    /// sentences it found support for, in order, and what was checked.
    fn verify_sentences(
        &mut self,
        passages: &[Passage],
        draft: &str,
    ) -> Result<(String, Verification)> {
        let started = Instant::now();
        let mut v = Verification::default();
        let mut kept: Vec<String> = Vec::new();
        for (s, e) in cite::sentences(draft) {
            let sentence = draft[s..e].trim();
            let (claim, numbers) = cite::claim(sentence, passages.len());
            if numbers.is_empty() {
                continue;
            }
            v.checked += 1;
            if self.supported(passages, &numbers, &claim)? {
                kept.push(sentence.to_owned());
            } else if let Some(k) = recite(passages, &numbers, &claim) {
                // Small models often cite the neighbour of the passage they copied from: the
                // claim stays, with the passage whose words it repeats.
                tracing::info!(
                    sentence,
                    to = k,
                    "verification: re-cited to the passage that holds it"
                );
                v.recited += 1;
                kept.push(cite::recited(sentence, k));
            } else {
                tracing::info!(
                    sentence,
                    "verification: not supported by its passages; dropped"
                );
                v.dropped.push(sentence.to_owned());
            }
        }
        v.seconds = started.elapsed().as_secs_f64();
        Ok((kept.join(" "), v))
    }

    /// Asks the model whether the passages numbered `numbers` support `claim`: the greedy
    /// choice between "yes" and "no", the only two replies allowed. The question runs in a
    /// sequence of its own, so the answer's cache is kept, and its fixed system message is
    /// read once.
    fn supported(&mut self, passages: &[Passage], numbers: &[u32], claim: &str) -> Result<bool> {
        let texts: Vec<&str> = numbers
            .iter()
            .filter_map(|&k| passages.get(usize::try_from(k).ok()?.checked_sub(1)?))
            .map(|p| p.text.trim())
            .collect();
        // The cheap test first: the model is asked only where the words leave it open.
        match cite::lexical_support(claim, &texts) {
            Some(x) if x >= cite::LEXICAL_SUPPORTED => return Ok(true),
            Some(x) if x < LEXICAL_UNSUPPORTED => return Ok(false),
            _ => {}
        }
        let check = prompt::check_turn(&texts, claim);
        let prompt = self
            .chat_prompt(&[("system", prompt::SYSTEM_CHECK), ("user", &check)])
            .unwrap_or_else(|| {
                format!(
                    "{}\n\n{check}\nAnswer (yes or no):",
                    prompt::SYSTEM_CHECK.trim()
                )
            });
        let tokens = self.tokenize(&prompt);
        let n_ctx = usize::try_from(self.ctx.n_ctx()).unwrap_or(usize::MAX);
        if tokens.len() + 1 + self.cached[SEQ_ANSWER].len() >= n_ctx {
            // The answer is written; its cache only saves the next question's system message.
            self.truncate(SEQ_ANSWER, 0);
        }
        if tokens.len() + 1 >= n_ctx {
            // No room to ask: keep the claim rather than drop it unchecked.
            tracing::info!("verification skipped: the passages do not fit the context");
            return Ok(true);
        }
        let mut timings = Timings::default();
        let idx = self.prefill(SEQ_CHECK, &tokens, &mut timings)?;
        let logits = self.ctx.get_logits_ith(idx);
        let best = |ts: &[LlamaToken]| {
            ts.iter()
                .filter_map(|t| logits.get(usize::try_from(t.0).ok()?))
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
        };
        Ok(best(&self.yes) >= best(&self.no))
    }

    /// Reads `prompt` into sequence `seq`, reusing the longest prefix the cache already
    /// holds; returns the batch index of the last token's logits.
    fn prefill(&mut self, seq: usize, prompt: &[LlamaToken], timings: &mut Timings) -> Result<i32> {
        let started = Instant::now();
        if prompt.is_empty() {
            return Err(Error::Config("empty prompt".into()));
        }
        let same = self.cached[seq]
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            // The last prompt token is always run again: its logits are what comes next.
            .min(prompt.len() - 1);
        let keep = self.truncate(seq, same);
        let rest = &prompt[keep..];
        let idx = self.append(seq, rest, "reading the prompt")?;
        timings.prompt_tokens_evaluated += rest.len();
        timings.prefill_seconds += started.elapsed().as_secs_f64();
        Ok(idx)
    }

    /// Runs `tokens` through the model at the end of sequence `seq`, with logits for the
    /// last one only; returns its batch index.
    fn append(&mut self, seq: usize, tokens: &[LlamaToken], stage: &'static str) -> Result<i32> {
        // A request that can be cancelled reads its prompt in slices, and stops between
        // them: a client that goes away during a long prefill frees the model within one
        // slice instead of after the whole prompt.
        let n_batch = usize::try_from(self.ctx.n_batch()).unwrap_or(512).max(1);
        let n_batch = if self.cancel.is_some() {
            n_batch.min(CANCELLABLE_BATCH)
        } else {
            n_batch
        };
        let seq_id = i32::try_from(seq).unwrap_or(0);
        let mut pos = i32::try_from(self.cached[seq].len()).unwrap_or(i32::MAX);
        for (i, chunk) in tokens.chunks(n_batch).enumerate() {
            if i > 0
                && self
                    .cancel
                    .as_ref()
                    .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                return Err(Error::Cancelled);
            }
            self.batch.clear();
            let last_chunk = (i + 1) * n_batch >= tokens.len();
            for (j, &token) in chunk.iter().enumerate() {
                self.batch
                    .add(token, pos, &[seq_id], last_chunk && j == chunk.len() - 1)?;
                pos += 1;
            }
            if let Err(source) = self.ctx.decode(&mut self.batch) {
                // What the cache holds past what was there is unknown now.
                self.forget();
                return Err(Error::Decode { stage, source });
            }
            // Recorded slice by slice, so a stop between slices leaves the cache's record
            // true (the next prompt reuses what was read).
            self.cached[seq].extend_from_slice(chunk);
        }
        Ok(self.batch.n_tokens() - 1)
    }

    /// See [`Generator::rewrite_question`]. Greedy, one line, at most [`REWRITE_TOKENS`].
    fn rewrite(
        &mut self,
        history: &[(String, String)],
        last: &str,
    ) -> Result<(Option<String>, usize, usize)> {
        if self.chat.is_none() {
            return Ok((None, 0, 0));
        }
        self.cancel = None;
        self.sampler = None;
        self.stops.clear();
        // The latest turns matter most; a long history is cut from its start.
        let mut turns: Vec<(String, String)> = Vec::new();
        let mut chars = 0;
        for (role, text) in history.iter().rev() {
            let text: String = text.chars().take(REWRITE_TURN_CHARS).collect();
            chars += text.len();
            if chars > REWRITE_HISTORY_CHARS {
                break;
            }
            turns.push((role.clone(), text));
        }
        turns.reverse();
        let user = prompt::rewrite_turn(&turns, last);
        let Some(text) = self.chat_prompt(&[("system", prompt::SYSTEM_REWRITE), ("user", &user)])
        else {
            return Ok((None, 0, 0));
        };
        let tokens = self.tokenize(&text);
        self.empty_check();
        let constraint = Constraint::new(self.model, r#"root ::= [^\n]+"#)?;
        let mut timings = Timings::default();
        let out = self.generate(
            &tokens,
            Some(constraint),
            REWRITE_TOKENS as usize,
            &mut timings,
            &mut |_| {},
        )?;
        let q = out.text.trim().trim_matches('"').trim();
        tracing::debug!(
            rewritten = q,
            secs = timings.prefill_seconds + timings.decode_seconds,
            "follow-up rewritten"
        );
        Ok((
            (!q.is_empty()).then(|| q.to_owned()),
            tokens.len(),
            out.tokens,
        ))
    }

    /// Reads the prompt into the answer sequence, then [`Self::decode`]s.
    fn generate(
        &mut self,
        prompt: &[LlamaToken],
        constraint: Option<Constraint>,
        cap: usize,
        timings: &mut Timings,
        emit: &mut dyn FnMut(&str),
    ) -> Result<Generated> {
        let ctx_len = usize::try_from(self.ctx.n_ctx()).unwrap_or(usize::MAX);
        // Packing kept the prompt inside the context, but llama.cpp must not be
        // handed more than it holds whatever the tokenizer did.
        if prompt.len() >= ctx_len {
            return Ok(Generated {
                text: String::new(),
                tokens: 0,
                stop_reason: StopReason::ContextFull,
            });
        }
        let idx = self.prefill(SEQ_ANSWER, prompt, timings)?;
        self.decode(idx, constraint, cap, timings, emit)
    }

    /// Generates from output `idx` of the answer sequence (its prompt read) until the grammar
    /// completes, an end-of-generation token, a stop rule (unconstrained only), the cap or a
    /// full context.
    fn decode(
        &mut self,
        mut idx: i32,
        mut constraint: Option<Constraint>,
        cap: usize,
        timings: &mut Timings,
        emit: &mut dyn FnMut(&str),
    ) -> Result<Generated> {
        let ctx_len = usize::try_from(self.ctx.n_ctx()).unwrap_or(usize::MAX);
        let started = Instant::now();
        let model = self.model;
        let vocab = model.vocab();
        // Base-model stop rules only where no grammar says when the answer is over.
        let mut rules = constraint.is_none().then(StopRules::default);
        let mut stops = StopStrings::new(&self.stops);
        let mut text = String::new();
        let mut utf8 = Utf8Stream::default();
        let mut generated = 0usize;
        let mut piece = Vec::new();
        let reason = loop {
            if generated >= cap {
                break StopReason::TokenCap;
            }
            if self
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                break StopReason::Cancelled;
            }
            // Greedy unless the request asked to sample: the same question and passages
            // then always give the same answer, which keeps the citation check repeatable.
            let token = grammar::pick(&self.ctx, idx, constraint.as_mut(), self.sampler.as_mut());
            if vocab.is_eog(token) {
                break StopReason::EndOfText;
            }
            if let Some(c) = constraint.as_mut() {
                c.accept(token);
            }
            generated += 1;
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let (s, stopped) = stops.push(&utf8.push(&piece));
            if let Some(r) = rules.as_mut() {
                let step = r.push(&s);
                if !step.emit.is_empty() {
                    emit(&step.emit);
                }
                if let Some(reason) = step.stop {
                    break reason;
                }
            } else {
                let s = if text.is_empty() {
                    s.trim_start().to_owned()
                } else {
                    s
                };
                if !s.is_empty() {
                    emit(&s);
                    text.push_str(&s);
                }
            }
            if stopped {
                // Nothing after the stop sequence is kept, not even part of a character.
                utf8 = Utf8Stream::default();
                break StopReason::StopSequence;
            }
            if self.cached[SEQ_ANSWER].len() + self.cached[SEQ_CHECK].len() >= ctx_len {
                break StopReason::ContextFull;
            }
            idx = self.append(SEQ_ANSWER, &[token], "generating")?;
        };
        // What the stop sequences held back, with the last bytes (none after a stop).
        let (mut tail, _) = stops.push(&utf8.finish());
        tail.push_str(&stops.finish());
        let (text, stop_reason) = match rules.as_mut() {
            Some(r) => {
                let step = r.push(&tail);
                if !step.emit.is_empty() {
                    emit(&step.emit);
                }
                let (rest, stop_reason) = r.finish(step.stop.unwrap_or(reason));
                if !rest.is_empty() {
                    emit(&rest);
                }
                (r.text().to_owned(), stop_reason)
            }
            None => {
                if !tail.is_empty() {
                    emit(&tail);
                    text.push_str(&tail);
                }
                (text, reason)
            }
        };
        timings.decode_seconds += started.elapsed().as_secs_f64();
        if let Some(c) = &constraint {
            timings.grammar_seconds += c.spent.as_secs_f64();
            timings.grammar_full_checks += c.full_checks;
        }
        Ok(Generated {
            text,
            tokens: generated,
            stop_reason,
        })
    }
}

/// The model's chat template, if llama.cpp can apply it to a system + user chat.
fn usable_chat_template(model: &LlamaModel) -> Option<LlamaChatTemplate> {
    let tmpl = model.chat_template(None).ok()?;
    let msgs = [
        LlamaChatMessage::new("system".into(), "s".into()).ok()?,
        LlamaChatMessage::new("user".into(), "u".into()).ok()?,
    ];
    match model.apply_chat_template(&tmpl, &msgs, true) {
        Ok(p) if p.contains('u') => Some(tmpl),
        _ => {
            tracing::info!(
                "the model's chat template cannot be applied; using the completion prompt"
            );
            None
        }
    }
}

/// The tokens whose text (leading spaces aside) is a start of `null`, and those that start
/// with a double quote.
fn choice_tokens(model: &LlamaModel) -> (Vec<LlamaToken>, Vec<LlamaToken>) {
    let vocab = model.vocab();
    let (mut nulls, mut quotes) = (Vec::new(), Vec::new());
    let mut piece = Vec::new();
    for t in vocab.tokens() {
        piece.clear();
        vocab.token_to_piece_into(t, &mut piece, false, None);
        let text = String::from_utf8_lossy(&piece);
        let text = text.trim_start_matches(' ');
        if text.starts_with('"') {
            quotes.push(t);
        } else if !text.is_empty() && ("null".starts_with(text) || text.starts_with("null")) {
            nulls.push(t);
        }
    }
    (nulls, quotes)
}

/// The passage, other than those `cited`, whose words cover `claim` best, if they cover it
/// well enough for the lexical test to call it supported.
fn recite(passages: &[Passage], cited: &[u32], claim: &str) -> Option<u32> {
    passages
        .iter()
        .zip(1u32..)
        .filter(|(_, k)| !cited.contains(k))
        .filter_map(|(p, k)| Some((cite::lexical_support(claim, &[p.text.trim()])?, k)))
        .filter(|&(x, _)| x >= cite::LEXICAL_SUPPORTED)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// The phrase (None for null, empty or unparsable) and the in-range citations of a short
/// answer's JSON.
fn parse_short(text: &str, n: usize) -> (Option<String>, Vec<u32>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) else {
        return (None, Vec::new());
    };
    let phrase = v["answer"]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let mut cited: Vec<u32> = v["citations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_u64)
        .filter(|&k| k >= 1 && usize::try_from(k).is_ok_and(|k| k <= n))
        .filter_map(|k| u32::try_from(k).ok())
        .collect();
    cited.dedup();
    (phrase, cited)
}

/// An answer with nothing in it yet, from a prompt of `prompt_tokens` that held `used`
/// passages and left `left_out` out.
fn blank_answer(used: usize, left_out: usize, prompt_tokens: usize) -> Answer {
    Answer {
        id: None,
        answer: String::new(),
        citations: Vec::new(),
        dropped_markers: Vec::new(),
        passages_used: used,
        passages_left_out: left_out,
        prompt_tokens,
        generated_tokens: 0,
        stop_reason: StopReason::EndOfText,
        abstained: false,
        sources: Vec::new(),
        json: None,
        verification: None,
        null_probability: None,
        timings: Timings::default(),
    }
}

/// Turns `answer` into the abstention, with the closest passages as its sources.
fn abstain(answer: &mut Answer, passages: &[Passage]) {
    answer.answer = ABSTENTION.to_owned();
    answer.abstained = true;
    answer.citations.clear();
    answer.sources = (1..=passages.len().min(CLOSEST_SOURCES))
        .filter_map(|k| cite::citation(passages, u32::try_from(k).ok()?, false))
        .collect();
}

/// Fails early, naming the path, where llama.cpp would only say "null result".
fn check_gguf(path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(Error::ModelNotFound {
            path: path.to_path_buf(),
        });
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::NotGguf {
                path: path.to_path_buf(),
            },
            _ => Error::ModelRead {
                path: path.to_path_buf(),
                source,
            },
        })?;
    if &magic != b"GGUF" {
        return Err(Error::NotGguf {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    use super::*;
    use crate::DEFAULT_ABSTAIN_THRESHOLD;
    use crate::grammar::is_cited_answer;

    /// The model cache, as `scripts/fetch_models.py` fills it.
    fn models_dir() -> PathBuf {
        std::env::var_os("SOVRAG_MODELS").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/sovrag/models")
            },
            PathBuf::from,
        )
    }

    /// A model file from the cache. A missing model fails the test: set-up fetches them
    /// first, so absence is a set-up bug.
    fn model(file: &str) -> PathBuf {
        let path = models_dir().join(file);
        assert!(
            path.is_file(),
            "generation model not found at {} (run python3 scripts/fetch_models.py)",
            path.display()
        );
        path
    }

    /// SmolLM2-135M-Instruct: the smallest GGUF with a chat template, for the mechanics.
    fn tiny_path() -> PathBuf {
        model("smollm2-135m-instruct-q4_1.gguf")
    }

    /// Qwen2.5-Coder-0.5B (`setup.sh --tests` fetches it), for behaviour that needs a model
    /// that reads: three times faster than the default 1.5B. `SOVRAG_GGUF` picks another.
    fn default_path() -> PathBuf {
        std::env::var_os("SOVRAG_GGUF").map_or_else(
            || model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
            PathBuf::from,
        )
    }

    fn config(path: PathBuf, n_ctx: u32) -> GeneratorConfig {
        GeneratorConfig {
            model_path: path,
            n_ctx,
            ..GeneratorConfig::default()
        }
    }

    fn tiny() -> &'static Generator {
        static GEN: OnceLock<Generator> = OnceLock::new();
        GEN.get_or_init(|| {
            Generator::load(GeneratorConfig {
                max_answer_tokens: 64,
                ..config(tiny_path(), 2048)
            })
            .expect("load tiny model")
        })
    }

    fn default_model() -> &'static Generator {
        static GEN: OnceLock<Generator> = OnceLock::new();
        GEN.get_or_init(|| Generator::load(config(default_path(), 4096)).expect("load model"))
    }

    #[test]
    fn a_cancelled_answer_stops_and_says_so() {
        let cancel = Arc::new(AtomicBool::new(true));
        let opts = AskOptions {
            cancel: Some(cancel.clone()),
            ..no_verify()
        };
        let q = "Which port does the HTTP API listen on?";
        let err = tiny().answer(q, &docs(), &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        // The next answer on the same model is unaffected.
        cancel.store(false, Ordering::Relaxed);
        assert!(tiny().answer(q, &docs(), &opts, &mut |_| {}).is_ok());
    }

    #[test]
    fn a_prompt_cancelled_while_read_stops_and_keeps_what_it_read() {
        // Its own model: the cache's contents are what this test looks at.
        let g = Generator::load(GeneratorConfig {
            max_answer_tokens: 8,
            ..config(tiny_path(), 4096)
        })
        .expect("load tiny model");
        let long: Vec<Passage> = (0..12)
            .map(|i| {
                passage(
                    &format!("docs/part{i}.md"),
                    1,
                    &format!("Part {i} of the manual explains the settings of module {i}, its defaults, its limits and how to change them from the command line or the config file."),
                )
            })
            .collect();
        let cancel = Arc::new(AtomicBool::new(true));
        let opts = AskOptions {
            cancel: Some(cancel.clone()),
            ..no_verify()
        };
        let q = "How do I change the settings of module 3?";
        let err = g.answer(q, &long, &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        cancel.store(false, Ordering::Relaxed);
        let a = g.answer(q, &long, &opts, &mut |_| {}).unwrap();
        // The slice read before the stop stayed in the cache and was not read again.
        assert!(
            a.prompt_tokens > 2 * CANCELLABLE_BATCH,
            "{}",
            a.prompt_tokens
        );
        assert!(
            a.timings.prompt_tokens_evaluated <= a.prompt_tokens - CANCELLABLE_BATCH + 1,
            "{} of {}",
            a.timings.prompt_tokens_evaluated,
            a.prompt_tokens
        );
    }

    #[test]
    fn a_claim_is_recited_only_to_a_passage_that_holds_its_words() {
        let ps = [
            passage(
                "a.md",
                1,
                "The ferry to Skellig leaves at seven in the morning.",
            ),
            passage("b.md", 1, "The barn owl hunts at dusk."),
        ];
        let claim = "The ferry to Skellig leaves at seven in the morning.";
        assert_eq!(recite(&ps, &[2], claim), Some(1));
        assert_eq!(recite(&ps, &[1], claim), None);
        assert_eq!(
            recite(&ps, &[2], "The ferry sinks in a storm off Kerry."),
            None
        );
    }

    fn passage(path: &str, start_line: u32, text: &str) -> Passage {
        Passage {
            path: path.to_owned(),
            start_line,
            end_line: start_line + u32::try_from(text.lines().count()).unwrap_or(1) - 1,
            text: text.to_owned(),
            ..Default::default()
        }
    }

    fn docs() -> Vec<Passage> {
        vec![
            passage(
                "docs/install.md",
                3,
                "sovrag is installed with `cargo install sovrag`.\nIt needs Rust 1.94 or newer and downloads its models on first run.",
            ),
            passage(
                "docs/watch.md",
                12,
                "By default sovrag indexes the current folder.\nTo watch another folder, run `sovrag serve --watch DIR`.\nChanges to files in DIR are re-indexed within a second.",
            ),
            passage(
                "docs/http.md",
                1,
                "The HTTP API listens on port 8080.\nPOST /ask with a JSON body returns the answer and its citations.",
            ),
        ]
    }

    fn no_verify() -> AskOptions {
        AskOptions {
            verify: false,
            ..AskOptions::default()
        }
    }

    /// A short answer, unverified, abstaining at `threshold` (`None`: the model's setting).
    fn short(threshold: Option<f32>) -> AskOptions {
        AskOptions {
            kind: AnswerKind::Short,
            abstain_threshold: threshold,
            ..no_verify()
        }
    }

    #[test]
    fn fifty_answers_all_parse_under_the_citation_grammar() {
        let g = tiny();
        assert!(g.uses_chat_template());
        let questions = [
            "How do I watch another folder?",
            "Which port does the HTTP API use?",
            "How is sovrag installed?",
            "What Rust version is needed?",
            "How fast are changes re-indexed?",
            "What does POST /ask return?",
            "What does sovrag index by default?",
            "Where do the models come from?",
            "Who wrote sovrag?",
            "What is the capital of France?",
        ];
        let mut passages = docs();
        let mut abstained = 0;
        for round in 0..5 {
            passages.rotate_left(1);
            let used = &passages[..3 - round % 2];
            for q in questions {
                let mut streamed = String::new();
                let a = g
                    .answer(q, used, &no_verify(), &mut |s| streamed.push_str(s))
                    .expect("answer");
                assert!(
                    is_cited_answer(&a.answer, a.passages_used),
                    "not under the grammar: {:?} (streamed {streamed:?})",
                    a.answer
                );
                for c in &a.citations {
                    assert!(c.n >= 1 && c.n as usize <= used.len(), "{c:?}");
                }
                abstained += usize::from(a.abstained);
            }
        }
        eprintln!("{abstained} of 50 abstained");
    }

    #[test]
    fn answer_cites_the_passage_that_holds_the_answer() {
        let g = default_model();
        let mut streamed = String::new();
        let a = g
            .answer(
                "How do I watch another folder?",
                &docs(),
                &AskOptions::default(),
                &mut |s| streamed.push_str(s),
            )
            .expect("answer");
        eprintln!("{a:#?}");
        assert!(!a.abstained, "{a:?}");
        assert!(!streamed.trim().is_empty(), "nothing was streamed");
        assert!(is_cited_answer(&a.answer, a.passages_used), "{a:?}");
        assert!(
            a.citations
                .iter()
                .any(|c| c.n == 2 && c.path == "docs/watch.md" && c.start_line == 12 && c.verified),
            "no verified citation of docs/watch.md: {a:#?}"
        );
        assert!(
            a.verification.as_ref().is_some_and(|v| v.checked >= 1),
            "{a:?}"
        );
        assert!(a.timings.first_token_seconds > 0.0);
    }

    #[test]
    fn abstains_when_the_passages_do_not_hold_the_answer() {
        let g = default_model();
        let a = g
            .answer(
                "What year did the Berlin Wall fall?",
                &docs(),
                &AskOptions::default(),
                &mut |_| {},
            )
            .expect("answer");
        eprintln!("{a:#?}");
        assert!(a.abstained, "{a:?}");
        assert_eq!(a.answer, ABSTENTION);
        assert!(a.citations.is_empty());
        assert_eq!(a.sources.len(), 3, "closest sources listed: {a:?}");
    }

    #[test]
    fn verification_drops_an_unsupported_sentence() {
        let g = default_model();
        let draft = "To watch another folder, run `sovrag serve --watch DIR` [2]. \
                     The HTTP API was written in Haskell by a team in Oslo [3].";
        let (kept, v) = g.with_worker(move |w| w.verify_sentences(&docs(), draft).expect("verify"));
        eprintln!("kept {kept:?}, {v:?}");
        assert_eq!(v.checked, 2);
        assert!(kept.contains("--watch DIR"), "{kept:?}");
        assert!(!kept.contains("Haskell"), "{kept:?}");
        assert_eq!(v.dropped.len(), 1, "{v:?}");
    }

    #[test]
    fn completion_prompt_is_used_without_a_chat_template() {
        let g = Generator::load(GeneratorConfig {
            use_chat_template: false,
            max_answer_tokens: 48,
            ..config(tiny_path(), 2048)
        })
        .expect("load");
        assert!(!g.uses_chat_template());
        let a = g
            .answer(
                "Which port does the HTTP API use?",
                &docs(),
                &no_verify(),
                &mut |_| {},
            )
            .expect("answer");
        assert!(is_cited_answer(&a.answer, a.passages_used), "{a:?}");
        assert!(a.prompt_tokens > 0);
    }

    #[test]
    fn the_system_prompt_is_read_once() {
        let g = tiny();
        let first = g
            .answer(
                "Which port does the HTTP API use?",
                &docs(),
                &no_verify(),
                &mut |_| {},
            )
            .expect("answer");
        let second = g
            .answer(
                "How is sovrag installed?",
                &docs(),
                &no_verify(),
                &mut |_| {},
            )
            .expect("answer");
        // At least the system message and the passages (the same both times) came from the cache.
        assert!(
            second.timings.prompt_tokens_evaluated + 100 < second.prompt_tokens,
            "first {:?}, second {:?}",
            first.timings,
            second.timings
        );
    }

    #[test]
    fn schema_answers_are_json_that_fits_the_schema() {
        let g = tiny();
        let schema = r#"{"type":"object","properties":{"port":{"type":"integer"},"protocol":{"enum":["http","https"]}},"required":["port","protocol"],"additionalProperties":false}"#;
        let a = g
            .answer(
                "Which port does the HTTP API use?",
                &docs(),
                &AskOptions {
                    kind: AnswerKind::Schema(schema.into()),
                    ..no_verify()
                },
                &mut |_| {},
            )
            .expect("answer");
        let v = a.json.expect("JSON answer");
        assert!(v["port"].is_i64(), "{v}");
        assert!(
            matches!(v["protocol"].as_str(), Some("http" | "https")),
            "{v}"
        );
        assert_eq!(v.as_object().map(serde_json::Map::len), Some(2), "{v}");
    }

    #[test]
    fn a_schema_that_cannot_be_compiled_is_an_error() {
        let g = tiny();
        let err = g
            .answer(
                "Which port?",
                &docs(),
                &AskOptions {
                    kind: AnswerKind::Schema("{\"type\": ".into()),
                    ..no_verify()
                },
                &mut |_| {},
            )
            .expect_err("a broken schema must fail");
        assert!(matches!(err, Error::Schema(_)), "{err:?}");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn short_answers_are_a_phrase_or_an_abstention() {
        let g = tiny();
        let mut streamed = String::new();
        let a = g
            .answer(
                "Which port does the HTTP API listen on?",
                &docs(),
                &short(None),
                &mut |s| streamed.push_str(s),
            )
            .expect("answer");
        let v = a.json.clone().expect("JSON");
        assert!(v["answer"].is_string() || v["answer"].is_null(), "{v}");
        assert_eq!(a.abstained, v["answer"].is_null(), "{a:?}");
        let p = a.null_probability.expect("the null choice is measured");
        assert!((0.0..=1.0).contains(&p), "{p}");
        assert_eq!(a.abstained, p >= DEFAULT_ABSTAIN_THRESHOLD, "{a:?}");
        for c in &a.citations {
            assert!(c.n >= 1 && c.n <= 3);
        }
        let streamed: serde_json::Value =
            serde_json::from_str(&streamed).expect("the stream is the JSON");
        assert_eq!(streamed, v);
    }

    #[test]
    fn short_answer_abstains_at_its_threshold_without_decoding() {
        let opts = |t: f32| short(Some(t));
        let q = "Which port does the HTTP API listen on?";
        let a = tiny()
            .answer(q, &docs(), &opts(0.0), &mut |_| {})
            .expect("answer");
        assert!(a.abstained, "{a:?}");
        assert_eq!(a.generated_tokens, 0);
        assert_eq!(a.answer, ABSTENTION);
        assert!(!a.sources.is_empty());
        assert_eq!(a.json.expect("JSON")["answer"], serde_json::Value::Null);
        // Above every probability: the phrase is always decoded.
        let a = tiny()
            .answer(q, &docs(), &opts(1.1), &mut |_| {})
            .expect("answer");
        assert!(!a.abstained, "{a:?}");
        assert!(a.generated_tokens > 0);
        assert!(a.json.expect("JSON")["answer"].is_string());
    }

    #[test]
    fn a_short_answer_does_not_depend_on_what_was_asked_before() {
        // Abstaining is a threshold on p(null): the same question over the same passages must
        // read the same probability whatever the cache held before it. A generator of its
        // own, so other tests' questions do not come between.
        let g = Generator::load(config(tiny_path(), 2048)).expect("load");
        let q = "Which port does the HTTP API listen on?";
        let p_null = |q: &str, passages: &[Passage], opts: &AskOptions| {
            g.answer(q, passages, opts, &mut |_| {})
                .expect("answer")
                .null_probability
        };
        let first = p_null(q, &docs(), &short(Some(1.1)));
        assert!(first.is_some());
        let mut other = docs();
        other.rotate_left(1);
        p_null("How is sovrag installed?", &other[..2], &short(Some(1.1)));
        p_null(
            "How do I watch another folder?",
            &other,
            &AskOptions::default(),
        );
        // Cells held by the second sequence (a verification's) between the two readings.
        g.with_worker(|w| {
            let t = w.tokenize("Is the statement supported by the passage? Answer yes or no.");
            w.prefill(SEQ_CHECK, &t, &mut Timings::default())
                .expect("prefill");
            assert!(!w.cached[SEQ_CHECK].is_empty());
        });
        assert_eq!(p_null(q, &docs(), &short(Some(1.1))), first);
    }

    #[test]
    fn short_answer_is_copied_from_the_passage_it_cites() {
        // Never abstaining: this is about copying and citing. (The default threshold, chosen
        // on SQuAD, abstains here: p(null) was 0.029 on this question.)
        let a = default_model()
            .answer(
                "Which port does the HTTP API listen on?",
                &docs(),
                &AskOptions {
                    kind: AnswerKind::Short,
                    abstain_threshold: Some(1.1),
                    ..AskOptions::default()
                },
                &mut |_| {},
            )
            .expect("answer");
        assert!(!a.abstained, "{a:?}");
        assert!(a.answer.contains("8080"), "{a:?}");
        let cited: Vec<u32> = a.citations.iter().map(|c| c.n).collect();
        assert_eq!(cited, vec![3], "{a:?}");
        assert!(a.citations.iter().all(|c| c.verified));
    }

    #[test]
    fn short_answer_through_the_completion_prompt() {
        let g = Generator::load(GeneratorConfig {
            use_chat_template: false,
            max_answer_tokens: 64,
            ..config(tiny_path(), 2048)
        })
        .expect("load");
        let a = g
            .answer(
                "Which port does the HTTP API listen on?",
                &docs(),
                &short(Some(1.1)),
                &mut |_| {},
            )
            .expect("answer");
        let v = a.json.clone().expect("JSON");
        assert!(v["answer"].is_string(), "{v}");
        assert!(a.prompt_tokens > 0);
    }

    #[test]
    fn a_phrase_cites_the_passages_that_hold_it() {
        let ps = docs();
        let holding = |phrase: &str, cited: &[u32]| cite::copied(&ps, phrase, cited).map(|c| c.1);
        // Cited where it is.
        assert_eq!(holding("port  8080", &[3]), Some(vec![3]));
        // Cited elsewhere: re-cited where it is.
        assert_eq!(holding("port 8080", &[1]), Some(vec![3]));
        // Uncited: found all the same.
        assert_eq!(holding("PORT 8080", &[]), Some(vec![3]));
        // Not copied from any passage: nothing holds it.
        assert_eq!(holding("port 7878", &[3]), None);
    }

    #[test]
    fn small_context_leaves_passages_out() {
        let g = Generator::load(GeneratorConfig {
            max_answer_tokens: 64,
            ..config(tiny_path(), 512)
        })
        .expect("load test model");
        let filler = "sovrag keeps every index on the local disk and never sends a document anywhere else.\n";
        let passages: Vec<Passage> = (0..12)
            .map(|i| passage(&format!("docs/part{i}.md"), 1, &filler.repeat(4)))
            .collect();
        let a = g
            .answer(
                "Where does sovrag keep its index?",
                &passages,
                &no_verify(),
                &mut |_| {},
            )
            .expect("answer");
        assert!(a.passages_left_out > 0, "{a:?}");
        assert!(a.passages_used >= 1, "{a:?}");
        assert_eq!(a.passages_used + a.passages_left_out, passages.len());
        assert!(a.prompt_tokens + 64 <= 512, "{a:?}");
        for c in &a.citations {
            assert!(c.n as usize <= a.passages_used, "{c:?}");
        }
    }

    #[test]
    fn missing_model_is_an_error_naming_the_path() {
        let path = PathBuf::from("/nonexistent/sovrag/no-such-model.gguf");
        let err = Generator::load(GeneratorConfig {
            model_path: path.clone(),
            ..GeneratorConfig::default()
        })
        .expect_err("loading a missing file must fail");
        assert!(matches!(err, Error::ModelNotFound { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("/nonexistent/sovrag/no-such-model.gguf"),
            "{err}"
        );
    }

    #[test]
    fn non_gguf_file_is_an_error_naming_the_path() {
        let path =
            std::env::temp_dir().join(format!("sovrag-not-a-model-{}.gguf", std::process::id()));
        std::fs::write(&path, b"this is not a model").expect("write temp file");
        let err = Generator::load(GeneratorConfig {
            model_path: path.clone(),
            ..GeneratorConfig::default()
        })
        .expect_err("loading a non-GGUF file must fail");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, Error::NotGguf { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn generator_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Generator>();
    }
}

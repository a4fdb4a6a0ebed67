//! Loading the GGUF model and decoding answers with llama.cpp.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LogOptions, send_logs_to_tracing};

use crate::prompt::{Template, pack};
use crate::stop::StopRules;
use crate::utf8::Utf8Stream;
use crate::{Answer, Error, GeneratorConfig, Passage, Result, StopReason, cite};

/// Tokens kept free beyond prompt and answer: the BOS token, and slack for
/// the prompt's real token count differing from the count used to pack it.
const CONTEXT_MARGIN: u32 = 16;

/// The smallest context that leaves room for a prompt worth sending.
const MIN_PROMPT_TOKENS: u32 = 64;

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

/// A loaded model that answers questions from passages.
///
/// Load it once and share it (`Arc<Generator>`): loading reads the whole
/// model, while each answer only creates a small decoding context.
pub struct Generator {
    backend: &'static LlamaBackend,
    model: LlamaModel,
    cfg: GeneratorConfig,
    template: Template,
    threads: i32,
    /// llama.cpp may write to the model while creating a context, so contexts
    /// are created one at a time; decoding in them runs in parallel.
    context_lock: Mutex<()>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("cfg", &self.cfg)
            .field("threads", &self.threads)
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
        let path = cfg.model_path.clone();
        check_gguf(&path)?;
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
        let params = LlamaModelParams::default().with_n_gpu_layers(cfg.n_gpu_layers);
        let started = Instant::now();
        let model = LlamaModel::load_from_file(backend, &path, &params)
            .map_err(|source| Error::ModelLoad { path, source })?;
        tracing::info!(
            model = %cfg.model_path.display(),
            n_ctx = cfg.n_ctx,
            n_gpu_layers = cfg.n_gpu_layers,
            threads,
            secs = started.elapsed().as_secs_f32(),
            "loaded generation model"
        );
        Ok(Self {
            backend,
            model,
            cfg,
            template: Template::answer(),
            threads,
            context_lock: Mutex::new(()),
        })
    }

    /// Answers `question` from `passages` (in rank order), calling `on_token`
    /// with each piece of answer text as it is generated.
    ///
    /// The streamed text is the answer as the model wrote it; the returned
    /// [`Answer::answer`] is authoritative, with citations checked (invalid
    /// markers removed, supported sentences cited).
    ///
    /// # Errors
    ///
    /// If `passages` is empty, if the question alone overflows the context,
    /// or if llama.cpp fails.
    pub fn answer(
        &self,
        question: &str,
        passages: &[Passage],
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Answer> {
        let vocab = self.model.vocab();
        let count = |s: &str| vocab.tokenize(s.as_bytes(), false, false).len();
        let budget = self.cfg.n_ctx - self.cfg.max_answer_tokens - CONTEXT_MARGIN;
        let packed = pack(&self.template, question, passages, budget as usize, &count)?;
        if packed.left_out > 0 {
            tracing::info!(
                used = packed.passages.len(),
                left_out = packed.left_out,
                "passages left out: context window full"
            );
        }
        let tokens = vocab.tokenize(packed.prompt.as_bytes(), true, false);

        let started = Instant::now();
        let generated = self.decode(&tokens, on_token)?;
        let secs = started.elapsed().as_secs_f32();
        tracing::debug!(
            prompt_tokens = tokens.len(),
            generated_tokens = generated.tokens,
            stop_reason = ?generated.stop_reason,
            secs,
            "generated answer"
        );

        let (answer, citations, dropped_markers) =
            cite::resolve_citations(&generated.text, &packed.passages);
        Ok(Answer {
            answer,
            citations,
            dropped_markers,
            passages_used: packed.passages.len(),
            passages_left_out: packed.left_out,
            prompt_tokens: tokens.len(),
            generated_tokens: generated.tokens,
            stop_reason: generated.stop_reason,
        })
    }

    /// Runs the prompt and generates until a stop rule fires.
    fn decode(&self, prompt: &[LlamaToken], on_token: &mut dyn FnMut(&str)) -> Result<Generated> {
        let n_ctx = NonZeroU32::new(self.cfg.n_ctx)
            .ok_or_else(|| Error::Config("n_ctx must be positive".into()))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads);
        let mut ctx = {
            // A poisoned lock only means another answer panicked; the model is
            // unchanged, so carry on.
            let _guard = self
                .context_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.model
                .new_context(self.backend, params)
                .map_err(|source| Error::Context {
                    n_ctx: self.cfg.n_ctx,
                    source,
                })?
        };
        let ctx_len = usize::try_from(ctx.n_ctx()).unwrap_or(usize::MAX);
        let n_batch = usize::try_from(ctx.n_batch()).unwrap_or(512).max(1);

        // Packing kept the prompt inside the context, but llama.cpp must not be
        // handed more than it holds whatever the tokenizer did.
        if prompt.len() >= ctx_len {
            return Ok(Generated {
                text: String::new(),
                tokens: 0,
                stop_reason: StopReason::ContextFull,
            });
        }

        let mut batch = LlamaBatch::new(n_batch, 1);
        let mut pos: i32 = 0;
        for (i, chunk) in prompt.chunks(n_batch).enumerate() {
            batch.clear();
            let last_chunk = (i + 1) * n_batch >= prompt.len();
            for (j, &token) in chunk.iter().enumerate() {
                // Only the last prompt token's logits are needed, to sample from.
                batch.add(token, pos, &[0], last_chunk && j == chunk.len() - 1)?;
                pos += 1;
            }
            ctx.decode(&mut batch).map_err(|source| Error::Decode {
                stage: "reading the prompt",
                source,
            })?;
        }

        // Greedy: the same question and passages always give the same answer,
        // which keeps answers testable and the citation check repeatable.
        let mut sampler = LlamaSampler::greedy();
        let vocab = self.model.vocab();
        let mut rules = StopRules::default();
        let mut utf8 = Utf8Stream::default();
        let mut generated = 0usize;
        let cap = self.cfg.max_answer_tokens as usize;
        let mut piece = Vec::new();
        let reason = loop {
            if generated >= cap {
                break StopReason::TokenCap;
            }
            let token = sampler.sample(&ctx, batch.n_tokens() - 1);
            if vocab.is_eog(token) {
                break StopReason::EndOfText;
            }
            generated += 1;
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let step = rules.push(&utf8.push(&piece));
            if !step.emit.is_empty() {
                on_token(&step.emit);
            }
            if let Some(reason) = step.stop {
                break reason;
            }
            if usize::try_from(pos).unwrap_or(usize::MAX) >= ctx_len {
                break StopReason::ContextFull;
            }
            batch.clear();
            batch.add(token, pos, &[0], true)?;
            pos += 1;
            ctx.decode(&mut batch).map_err(|source| Error::Decode {
                stage: "generating",
                source,
            })?;
        };
        let tail = utf8.finish();
        let step = rules.push(&tail);
        if !step.emit.is_empty() {
            on_token(&step.emit);
        }
        let (rest, stop_reason) = rules.finish(step.stop.unwrap_or(reason));
        if !rest.is_empty() {
            on_token(&rest);
        }
        Ok(Generated {
            text: rules.text().to_owned(),
            tokens: generated,
            stop_reason,
        })
    }
}

/// What the decode loop produced, before citation checking.
struct Generated {
    text: String,
    tokens: usize,
    stop_reason: StopReason,
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

    const DEFAULT_GGUF: &str = "/root/.cache/sovrag/models/smollm2-135m-instruct-q4_1.gguf";

    /// The test model: `SOVRAG_GGUF` or the path CI downloads it to. A missing
    /// model fails the test: CI fetches it first, so absence is a setup bug.
    fn model_path() -> PathBuf {
        let path = std::env::var_os("SOVRAG_GGUF")
            .map_or_else(|| PathBuf::from(DEFAULT_GGUF), PathBuf::from);
        assert!(
            path.is_file(),
            "generation model not found at {} (set SOVRAG_GGUF or fetch the models first)",
            path.display()
        );
        path
    }

    fn config(n_ctx: u32) -> GeneratorConfig {
        GeneratorConfig {
            model_path: model_path(),
            n_ctx,
            ..GeneratorConfig::default()
        }
    }

    /// One model for the tests that use the default config: loading it per
    /// test would only slow the suite down.
    fn generator() -> &'static Generator {
        static GEN: OnceLock<Generator> = OnceLock::new();
        GEN.get_or_init(|| Generator::load(config(4096)).expect("load test model"))
    }

    fn passage(path: &str, start_line: u32, text: &str) -> Passage {
        Passage {
            path: path.to_owned(),
            start_line,
            end_line: start_line + u32::try_from(text.lines().count()).unwrap_or(1) - 1,
            text: text.to_owned(),
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

    #[test]
    fn answer_cites_the_passage_that_holds_the_answer() {
        let generator = generator();
        let mut streamed = String::new();
        let started = Instant::now();
        let answer = generator
            .answer("How do I watch another folder?", &docs(), &mut |piece| {
                streamed.push_str(piece);
            })
            .expect("answer");
        eprintln!(
            "answer in {:.2}s ({} prompt tokens, {} generated): {answer:#?}",
            started.elapsed().as_secs_f32(),
            answer.prompt_tokens,
            answer.generated_tokens
        );
        assert!(!answer.answer.trim().is_empty(), "empty answer: {answer:?}");
        assert!(!streamed.trim().is_empty(), "nothing was streamed");
        assert!(answer.generated_tokens <= 200, "{answer:?}");
        assert!(
            answer.stop_reason != StopReason::TokenCap || answer.generated_tokens == 200,
            "{answer:?}"
        );
        assert_eq!(answer.passages_used, 3);
        assert_eq!(answer.passages_left_out, 0);
        assert!(
            answer
                .citations
                .iter()
                .any(|c| c.n == 2 && c.path == "docs/watch.md" && c.start_line == 12),
            "no citation of docs/watch.md: {answer:#?}"
        );
        // Every marker left in the answer resolves to a citation.
        for c in &answer.citations {
            assert!(answer.answer.contains(&c.n.to_string()));
        }
    }

    #[test]
    fn small_context_leaves_passages_out() {
        let generator = Generator::load(config(512)).expect("load test model");
        let filler = "sovrag keeps every index on the local disk and never sends a document anywhere else.\n";
        let passages: Vec<Passage> = (0..12)
            .map(|i| passage(&format!("docs/part{i}.md"), 1, &filler.repeat(4)))
            .collect();
        let answer = generator
            .answer("Where does sovrag keep its index?", &passages, &mut |_| {})
            .expect("answer");
        assert!(answer.passages_left_out > 0, "{answer:?}");
        assert!(answer.passages_used >= 1, "{answer:?}");
        assert_eq!(
            answer.passages_used + answer.passages_left_out,
            passages.len()
        );
        assert!(answer.prompt_tokens + 200 <= 512, "{answer:?}");
        for c in &answer.citations {
            assert!(c.n as usize <= answer.passages_used, "{c:?}");
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

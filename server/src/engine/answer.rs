//! Answers: the passages a search found, handed to the generator, and the answer logged.

use anyhow::Result;
use sovrag_generate::{Answer, AskOptions, Passage};
use sovrag_ingest::embed::Embedder;
use sovrag_retrieve::Hit;

use super::Engine;

/// The answer when nothing is indexed.
const NOTHING_INDEXED: &str = "Nothing is indexed yet, so there is nothing to answer from. Run `sovrag index DIR` or `sovrag serve --watch DIR` first.";

impl Engine {
    /// Answers `question` from the `k` best passages with the generator `model` names
    /// (`None`: the default); `on_token` sees the answer as it streams.
    pub async fn ask(
        &self,
        question: &str,
        k: usize,
        model: Option<&str>,
        opts: AskOptions,
        on_token: impl FnMut(&str) + Send + 'static,
    ) -> Result<Answer> {
        let hits = self.query(question, k).await?;
        let passages = hits.into_iter().map(passage).collect();
        self.answer(question, passages, model, opts, on_token).await
    }

    /// Answers `question` from `passages` (see [`Engine::ask`]).
    pub async fn answer(
        &self,
        question: &str,
        passages: Vec<Passage>,
        model: Option<&str>,
        opts: AskOptions,
        mut on_token: impl FnMut(&str) + Send + 'static,
    ) -> Result<Answer> {
        if passages.is_empty() {
            // Nothing indexed: say so rather than let the model answer from nothing.
            let answer = Answer {
                id: None,
                answer: NOTHING_INDEXED.into(),
                citations: Vec::new(),
                dropped_markers: Vec::new(),
                passages_used: 0,
                passages_left_out: 0,
                prompt_tokens: 0,
                generated_tokens: 0,
                stop_reason: sovrag_generate::StopReason::EndOfText,
                abstained: true,
                sources: Vec::new(),
                json: None,
                verification: None,
                null_probability: None,
                timings: sovrag_generate::Timings::default(),
            };
            on_token(&answer.answer);
            return Ok(answer);
        }
        let generator = self.generator_for(model).await?;
        let model = model.map_or_else(|| self.default_model(), str::to_owned);
        let q = question.to_string();
        // Indexing pauses between batches while the answer is written: the two would share
        // the cores, and decoding suffers most (see `Embedder::foreground`).
        let embedder = self.embedder.get().cloned();
        let _foreground = embedder.as_deref().map(Embedder::foreground);
        let (mut answer, passages) = tokio::task::spawn_blocking(move || {
            let a = generator.answer(&q, &passages, &opts, &mut on_token)?;
            anyhow::Ok((a, passages))
        })
        .await??;
        crate::usage::answered(&model, answer.prompt_tokens, answer.generated_tokens);
        if self.config.answer_log {
            match self.answers.keep(question, &model, &passages, &answer) {
                Ok(id) => answer.id = Some(id),
                // The answer is worth more than its log entry.
                Err(e) => tracing::warn!("answer log: {e:#}"),
            }
        }
        Ok(answer)
    }
}

/// A search hit as the generator takes it.
pub fn passage(h: Hit) -> Passage {
    Passage {
        path: h.path,
        doc_id: h.doc_id,
        start_line: h.start_line,
        end_line: h.end_line,
        text: h.text,
        page: h.location.page,
        section: h.location.section,
    }
}

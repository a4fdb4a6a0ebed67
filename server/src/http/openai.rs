//! The OpenAI-compatible endpoints: chat completions (whole or streamed as server-sent
//! events), models, embeddings. A chat completion is a sovrag answer: retrieval, the cited
//! answer, verification; its citations come back as `url_citation` annotations and a
//! `sources` list.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sovrag_generate::{Answer, AnswerKind, AskOptions, StopReason};
use sovrag_retrieve::Hit;

use super::{ApiError, State, authorize, check_k, run, schema_kind};
use crate::engine::{Engine, passage};

/// Passages retrieved for a chat question.
const CHAT_K: usize = 5;
/// Most messages in one request, and most characters in all of them.
const MAX_MESSAGES: usize = 256;
const MAX_MESSAGE_CHARS: usize = 64 * 1024;
/// Most inputs, and characters each, in one embeddings request.
const MAX_EMBED_INPUTS: usize = 256;
const MAX_EMBED_CHARS: usize = 8 * 1024;
/// How often a stream that has nothing to send yet says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The embedding model's id in responses.
const EMBED_MODEL: &str = "all-MiniLM-L6-v2";

/// A chat completion request: the last message is the question, earlier turns its context.
/// Fields OpenAI defines and sovrag does not use (`user`, penalties, ...) are ignored.
#[derive(Deserialize, JsonSchema)]
pub(super) struct ChatRequest {
    /// The generator (`GET /v1/models`); the server's default when absent.
    model: Option<String>,
    #[schemars(length(min = 1, max = MAX_MESSAGES))]
    messages: Vec<Message>,
    /// Answer as server-sent events (`chat.completion.chunk`).
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    #[schemars(range(min = 1))]
    #[serde(default, deserialize_with = "super::whole_number")]
    max_tokens: Option<u32>,
    #[schemars(range(min = 1))]
    #[serde(default, deserialize_with = "super::whole_number")]
    max_completion_tokens: Option<u32>,
    response_format: Option<ResponseFormat>,
    /// Absent or 0: greedy decoding (the same question gives the same answer).
    #[schemars(range(min = 0.0, max = 2.0))]
    temperature: Option<f32>,
    /// Nucleus sampling, above 0 and at most 1.
    #[schemars(range(max = 1.0), extend("exclusiveMinimum" = 0))]
    top_p: Option<f32>,
    #[serde(default, deserialize_with = "super::whole_number")]
    seed: Option<u64>,
    /// Text that ends the answer where it first appears (up to 4 strings).
    stop: Option<Stop>,
    /// sovrag's own: passages to retrieve (default 5).
    #[schemars(range(min = 1, max = super::MAX_K))]
    #[serde(default, deserialize_with = "super::whole_number")]
    k: Option<usize>,
    /// sovrag's own: verify the answer (default: the server's setting).
    verify: Option<bool>,
}

#[derive(Deserialize, JsonSchema)]
struct Message {
    /// `system`, `user` or `assistant` (`developer` and `tool` are taken and not used);
    /// the last message must be the user's.
    #[schemars(with = "Role")]
    role: String,
    /// A string, or an array of parts of which the `text` ones count.
    #[serde(default)]
    content: Value,
}

/// A message's `role`, for the document.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// One stop sequence or up to four.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(#[schemars(length(max = MAX_STOPS))] Vec<String>),
}

/// Most stop sequences a request may give, as OpenAI allows.
const MAX_STOPS: usize = 4;

/// The request's stop sequences, checked.
fn stops_of(stop: Option<Stop>) -> Result<Vec<String>, ApiError> {
    let stops = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stops.len() > MAX_STOPS || stops.iter().any(|s| s.len() > 256) {
        return Err(ApiError::BadRequest(format!(
            "`stop` takes up to {MAX_STOPS} strings of up to 256 bytes"
        )));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

#[derive(Deserialize, JsonSchema)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// `text`, `json_object`, or `json_schema` with a schema the answer is held to.
#[derive(Deserialize, JsonSchema)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize, JsonSchema)]
struct JsonSchemaFormat {
    schema: Option<Value>,
}

/// The text of a message's content.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The question a conversation asks: its last user message; a follow-up ("and on
/// Windows?") is asked together with the user message before it, so that search and the
/// generator see what it follows up on.
/// The question (the last message, a user's) and the turns before it that have text, as
/// `(role, text)`: context a follow-up is rewritten with.
fn question_of(messages: &[Message]) -> Result<(String, Vec<(String, String)>), ApiError> {
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(ApiError::BadRequest(format!(
            "`messages` must hold 1 to {MAX_MESSAGES} messages"
        )));
    }
    let total: usize = messages.iter().map(|m| text_of(&m.content).len()).sum();
    if total > MAX_MESSAGE_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`messages` hold {total} characters; the limit is {MAX_MESSAGE_CHARS}"
        )));
    }
    let (last, earlier) = messages.split_last().expect("not empty");
    let question = text_of(&last.content).trim().to_owned();
    if last.role != "user" || question.is_empty() {
        return Err(ApiError::BadRequest(
            "the last message must be a user message with text: it is the question".into(),
        ));
    }
    // System messages are the client's instructions to a model, not conversation.
    let history = earlier
        .iter()
        .filter(|m| m.role == "user" || m.role == "assistant")
        .map(|m| (m.role.clone(), text_of(&m.content).trim().to_owned()))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    Ok((question, history))
}

/// The answer kind `response_format` asks for.
fn kind_of(format: Option<&ResponseFormat>) -> Result<AnswerKind, ApiError> {
    let schema = match format {
        None => return Ok(AnswerKind::Prose),
        Some(f) if f.kind == "text" => return Ok(AnswerKind::Prose),
        Some(f) if f.kind == "json_object" => json!({"type": "object"}),
        Some(f) if f.kind == "json_schema" => f
            .json_schema
            .as_ref()
            .and_then(|s| s.schema.clone())
            .ok_or_else(|| {
                ApiError::BadRequest("`response_format.json_schema.schema` is missing".into())
            })?,
        Some(f) => {
            return Err(ApiError::BadRequest(format!(
                "`response_format.type` `{}` is not one of text, json_object, json_schema",
                f.kind
            )));
        }
    };
    schema_kind(&schema, "response_format.json_schema.schema")
}

/// Checks `model` names an available generator; returns its id.
fn model_of(engine: &Engine, model: Option<&str>) -> Result<String, ApiError> {
    match model.filter(|m| !m.is_empty()) {
        None => Ok(engine.default_model()),
        Some(m) if engine.models().iter().any(|i| i.id == m) => Ok(m.to_owned()),
        Some(m) => Err(ApiError::ModelNotFound(m.to_owned())),
    }
}

/// One sovrag answer, asked the way a chat completion or a streamed `/v1/ask` asks it.
pub(super) struct Job {
    pub question: String,
    /// Earlier turns of a chat: a follow-up is rewritten with them before retrieval.
    pub history: Vec<(String, String)>,
    pub k: usize,
    pub model: String,
    pub opts: AskOptions,
}

fn finish_reason(a: &Answer) -> &'static str {
    match a.stop_reason {
        StopReason::TokenCap => "length",
        _ => "stop",
    }
}

fn document_url(doc_id: &str, start: u32, end: u32) -> String {
    format!("/v1/documents/{doc_id}#L{start}-L{end}")
}

/// The passages given to the generator, numbered as the answer cites them.
fn sources(hits: &[Hit]) -> Value {
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            json!({
                "index": i + 1,
                "doc_id": h.doc_id,
                "path": h.path,
                "start_line": h.start_line,
                "end_line": h.end_line,
                "page": h.location.page,
                "section": h.location.section,
                "title": h.path,
                "url": document_url(&h.doc_id, h.start_line, h.end_line),
                "score": h.score,
                "text": h.text,
            })
        })
        .collect()
}

/// Each citation marker of the answer as an OpenAI `url_citation` annotation: the marker's
/// character range in `content`, and the cited passage's document and lines.
fn annotations(a: &Answer) -> Vec<Value> {
    let char_at = |byte: usize| a.answer[..byte].chars().count();
    let mut out = Vec::new();
    for (range, numbers) in sovrag_generate::citation_markers(&a.answer) {
        for n in numbers {
            let Some(c) = a.citations.iter().find(|c| c.n == n) else {
                continue;
            };
            out.push(json!({
                "type": "url_citation",
                "url_citation": {
                    "start_index": char_at(range.start),
                    "end_index": char_at(range.end),
                    "url": document_url(&c.doc_id, c.start_line, c.end_line),
                    "title": c.path,
                }
            }));
        }
    }
    out
}

fn usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.generated_tokens,
        "total_tokens": a.prompt_tokens + a.generated_tokens,
    })
}

/// What sovrag adds to the last message or chunk: whether it abstained, the citations as
/// the native API gives them, and what verification did. `answer` is the answer as kept:
/// a stream's deltas are the draft as written, which verification or a cut can shorten,
/// and a page shows this once the stream ends.
fn extension(a: &Answer, question: &str) -> Value {
    json!({
        "answer_id": a.id,
        "answer": a.answer,
        "question": question,
        "abstained": a.abstained,
        "citations": a.citations,
        "verification": a.verification,
        "timings": a.timings,
    })
}

/// OpenAI's sampling fields: `temperature` 0 (or none) decodes greedily; above it, tokens
/// are drawn with `top_p` (default 1) from a generator seeded by `seed` (default: the clock,
/// so unseeded answers vary as clients expect).
fn sampling_of(
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
) -> Result<Option<sovrag_generate::Sampling>, ApiError> {
    let t = temperature.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&t) {
        return Err(ApiError::BadRequest(
            "`temperature` must be between 0 and 2".into(),
        ));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::BadRequest(
            "`top_p` must be above 0 and at most 1".into(),
        ));
    }
    if t == 0.0 {
        return Ok(None);
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    Ok(Some(sovrag_generate::Sampling {
        temperature: t,
        top_p,
        seed,
    }))
}

fn completion_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("chatcmpl-{nanos:x}")
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Json<ChatRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body = body.into_inner();
    let engine = state.engine.clone();
    let (question, history) = question_of(&body.messages)?;
    let kind = kind_of(body.response_format.as_ref())?;
    let model = model_of(&engine, body.model.as_deref())?;
    let k = check_k(body.k, CHAT_K)?;
    let max_tokens = body.max_completion_tokens.or(body.max_tokens);
    if max_tokens == Some(0) {
        return Err(ApiError::BadRequest(
            "`max_tokens` must be at least 1".into(),
        ));
    }
    let sampling = sampling_of(body.temperature, body.top_p, body.seed)?;
    let stop = stops_of(body.stop)?;
    let job = Job {
        question,
        history,
        k,
        model,
        opts: AskOptions {
            kind,
            verify: body.verify.unwrap_or(engine.config.verify),
            max_tokens,
            sampling,
            stop,
            ..AskOptions::default()
        },
    };
    let include_usage = body.stream_options.is_some_and(|o| o.include_usage);
    if body.stream {
        return stream(&state, job, include_usage);
    }
    let model = job.model.clone();
    let (question, hits, answer) = answer_whole(&state, job).await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": crate::usage::now_secs(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": answer.answer,
                "refusal": null,
                "annotations": annotations(&answer),
            },
            "logprobs": null,
            "finish_reason": finish_reason(&answer),
        }],
        "usage": usage(&answer),
        "sources": sources(&hits),
        "sovrag": extension(&answer, &question),
    })))
}

/// Answers `job` whole, once admitted (429 otherwise): the passages given to the generator,
/// and its answer. A client that goes away stops it.
pub(super) async fn answer_whole(
    state: &State,
    mut job: Job,
) -> Result<(String, Vec<Hit>, Answer), ApiError> {
    let slot = state.answer_slot()?;
    let _stop = CancelOnDrop(job.opts.cancel.insert(Arc::default()).clone());
    let engine = state.engine.clone();
    run(state, async move {
        let _slot = slot.run().await;
        ask(&engine, job, |_| {}).await
    })
    .await
}

/// Stops an answer when dropped: actix drops a request's handler when its client goes away,
/// and the answer, running on another runtime, must not outlive it. (Dropped after the
/// answer is done, it stops nothing.)
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Retrieves, then answers: the question retrieved on (a follow-up rewritten), the
/// passages given to the generator, and its answer.
async fn ask(
    engine: &Engine,
    job: Job,
    on_token: impl FnMut(&str) + Send + 'static,
) -> anyhow::Result<(String, Vec<Hit>, Answer)> {
    let question = engine
        .standalone_question(&job.model, &job.history, &job.question)
        .await?;
    let hits = engine.query(&question, job.k).await?;
    let passages = hits.iter().cloned().map(passage).collect();
    let answer = engine
        .answer(&question, passages, Some(&job.model), job.opts, on_token)
        .await?;
    Ok((question, hits, answer))
}

/// One server-sent event carrying `v` as JSON.
fn event(v: &Value) -> web::Bytes {
    web::Bytes::from(format!("data: {v}\n\n"))
}

/// Streams `job`'s answer as `chat.completion.chunk` events: the role (with the sources)
/// once retrieval is done, content as the answer is written, then the annotations with the
/// finish reason, the usage when asked for, and `[DONE]`. Comments keep the connection
/// alive while nothing else is sent; an error after the stream began is an `error` event.
pub(super) fn stream(
    state: &State,
    mut job: Job,
    include_usage: bool,
) -> Result<HttpResponse, ApiError> {
    let slot = state.answer_slot()?;
    // A client that goes away (a send fails: the keep-alive finds out within seconds)
    // stops its answer at the next token.
    let cancel = Arc::new(AtomicBool::new(false));
    job.opts.cancel = Some(cancel.clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<web::Bytes>();
    let engine = state.engine.clone();
    let (id, created, model) = (completion_id(), crate::usage::now_secs(), job.model.clone());
    let chunk = move |delta: Value, finish: Option<&str>, extra: Option<(&str, Value)>| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if let Some((key, value)) = extra {
            v[key] = value;
        }
        v
    };
    // A weak sender: the stream ends as soon as the answer's task is done, not at the next
    // keep-alive tick.
    let alive = (tx.downgrade(), cancel.clone());
    state.rt.spawn(async move {
        let (tx, cancel) = alive;
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(tx) = tx.upgrade() else {
                break;
            };
            if tx.send(web::Bytes::from(": keep-alive\n\n")).is_err() {
                cancel.store(true, Ordering::Relaxed);
                break;
            }
        }
    });
    state.rt.spawn(async move {
        let _slot = slot.run().await;
        let result = async {
            let question = engine
                .standalone_question(&job.model, &job.history, &job.question)
                .await?;
            let hits = engine.query(&question, job.k).await?;
            let first = chunk(
                json!({"role": "assistant", "content": ""}),
                None,
                Some(("sources", sources(&hits))),
            );
            let _ = tx.send(event(&first));
            let pieces = tx.clone();
            let piece_chunk = chunk.clone();
            let passages = hits.into_iter().map(passage).collect();
            let on_piece = move |s: &str| {
                let piece = piece_chunk(json!({"content": s}), None, None);
                if pieces.send(event(&piece)).is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
            };
            let answer = engine
                .answer(&question, passages, Some(&job.model), job.opts, on_piece)
                .await?;
            anyhow::Ok((question, answer))
        }
        .await;
        match result {
            Ok((question, answer)) => {
                let last = chunk(
                    json!({"annotations": annotations(&answer)}),
                    Some(finish_reason(&answer)),
                    Some(("sovrag", extension(&answer, &question))),
                );
                let _ = tx.send(event(&last));
                if include_usage {
                    let mut u = chunk(json!({}), None, Some(("usage", usage(&answer))));
                    u["choices"] = json!([]);
                    let _ = tx.send(event(&u));
                }
            }
            Err(e) => {
                super::log_failure(&e);
                let err = ApiError::from_engine(e);
                let _ = tx.send(event(&err.body()));
            }
        }
        let _ = tx.send(web::Bytes::from("data: [DONE]\n\n"));
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// `GET /v1/models`: the generators a request may name.
pub(super) async fn models(
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let data: Vec<Value> = state.engine.models().iter().map(model_json).collect();
    Ok(HttpResponse::Ok().json(json!({"object": "list", "data": data})))
}

/// `GET /v1/models/{id}`.
pub(super) async fn model(
    req: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let id = id.into_inner();
    match state.engine.models().iter().find(|m| m.id == id) {
        Some(m) => Ok(HttpResponse::Ok().json(model_json(m))),
        None => Err(ApiError::ModelNotFound(id)),
    }
}

fn model_json(m: &crate::engine::ModelInfo) -> Value {
    json!({"id": m.id, "object": "model", "created": m.created, "owned_by": "sovrag"})
}

/// What `input` takes, for the document; the handler reads it from a `Value` so that
/// what it refuses (token arrays) is named in the error.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EmbeddingInput {
    One(#[schemars(length(max = MAX_EMBED_CHARS))] String),
    Many(
        #[schemars(length(min = 1, max = MAX_EMBED_INPUTS), inner(length(max = MAX_EMBED_CHARS)))]
        Vec<String>,
    ),
}

/// `encoding_format`'s values.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum EncodingFormat {
    Float,
    Base64,
}

/// Text to embed with the shipped model (whatever `model` names).
#[derive(Deserialize, JsonSchema)]
pub(super) struct EmbeddingsRequest {
    /// A string or an array of strings.
    #[schemars(with = "EmbeddingInput")]
    input: Value,
    /// `float` (default) or `base64` (little-endian f32s).
    #[serde(default)]
    #[schemars(with = "Option<EncodingFormat>")]
    encoding_format: Option<String>,
}

/// `POST /v1/embeddings`: the shipped embedding model (all-MiniLM-L6-v2, 384 dimensions,
/// unit length), whatever `model` the request names.
pub(super) async fn embeddings(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Json<EmbeddingsRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body = body.into_inner();
    let inputs: Vec<String> = match body.input {
        Value::String(s) => vec![s],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return Err(ApiError::BadRequest(
                "`input` must be a string or an array of strings (token arrays are not taken)"
                    .into(),
            ));
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::BadRequest(format!(
            "`input` must hold 1 to {MAX_EMBED_INPUTS} strings"
        )));
    }
    // Characters, as JSON Schema's maxLength counts them (the model reads 256 tokens).
    if inputs.iter().any(|s| s.chars().count() > MAX_EMBED_CHARS) {
        return Err(ApiError::BadRequest(format!(
            "each `input` string may have at most {MAX_EMBED_CHARS} characters"
        )));
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`encoding_format` `{other}` is not float or base64"
            )));
        }
    };
    let engine = state.engine.clone();
    let (vectors, tokens) = run(&state, async move { engine.embed(inputs).await }).await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": EMBED_MODEL,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

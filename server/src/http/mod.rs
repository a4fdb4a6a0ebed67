//! The HTTP API and the web page (actix-web): sovrag's own endpoints here, the
//! OpenAI-compatible ones in [`openai`].

mod answers;
mod auth;
mod metrics;
mod openai;
mod openapi;

pub use auth::Keys;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, error, web};
use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use sovrag_generate::{AnswerKind, AskOptions};

use crate::engine::{Engine, UnknownModel};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// Largest `k` a client may ask for.
const MAX_K: usize = 100;
/// Answers that may wait for the generator beyond those it is working on; past them a
/// request is refused with 429.
const MAX_WAITING_ANSWERS: usize = 8;
/// What a refused client is told to wait before trying again, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

const PAGE: &str = include_str!("../../web/index.html");

struct State {
    engine: Arc<Engine>,
    // The engine's async work (LanceDB) runs on the main multi-threaded runtime, not on
    // actix's single-threaded worker runtimes.
    rt: tokio::runtime::Handle,
    keys: Keys,
    /// Answers admitted: running or waiting.
    admitted: Arc<Semaphore>,
    /// Answers running at once (`max_concurrent_answers`).
    running: Arc<Semaphore>,
    /// Requests and their latency, for `/metrics`.
    requests: metrics::Requests,
}

impl State {
    /// A place for one answer, or 429 when too many are running and waiting. Searches never
    /// take one: generation does not hold them up.
    fn answer_slot(&self) -> Result<Slot, ApiError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Busy)?;
        Ok(Slot {
            _admitted: admitted,
            running: self.running.clone(),
        })
    }
}

/// An admitted answer; [`Slot::run`] waits for its turn.
struct Slot {
    _admitted: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
}

impl Slot {
    async fn run(self) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let running = self
            .running
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        (self._admitted, running)
    }
}

/// Every error the API returns, and its HTTP status: one table, in OpenAI's shape
/// (`{"error": {"message", "type", "param", "code"}}`) on every route.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong API key: send `Authorization: Bearer KEY`")]
    Unauthorized,
    #[error("request body is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("not found")]
    NotFound,
    /// The path exists, not with this method; holds the methods it takes (`Allow`).
    #[error("method not allowed: this path takes {0}")]
    MethodNotAllowed(String),
    #[error("{}", UnknownModel(.0.clone()))]
    ModelNotFound(String),
    #[error("too many answers are running or waiting: try again in {RETRY_AFTER_SECS} s")]
    Busy,
    /// The request is well-formed and cannot be done as asked (a JSON answer that does not
    /// fit in its token limit).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// An engine failure: a model the request named that does not exist is the client's.
    fn from_engine(e: anyhow::Error) -> Self {
        if let Some(UnknownModel(m)) = e.downcast_ref::<UnknownModel>() {
            return ApiError::ModelNotFound(m.clone());
        }
        match e.downcast_ref::<sovrag_generate::Error>() {
            Some(t @ sovrag_generate::Error::Truncated(_)) => {
                ApiError::Unprocessable(t.to_string())
            }
            _ => ApiError::Internal(format!("{e:#}")),
        }
    }

    fn body(&self) -> serde_json::Value {
        let (kind, code) = match self {
            ApiError::BadRequest(_)
            | ApiError::TooLarge
            | ApiError::NotFound
            | ApiError::MethodNotAllowed(_)
            | ApiError::Unprocessable(_) => ("invalid_request_error", None),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::Unauthorized => ("authentication_error", Some("invalid_api_key")),
            ApiError::Busy => ("rate_limit_error", Some("rate_limit_exceeded")),
            ApiError::Internal(_) => ("server_error", None),
        };
        serde_json::json!({
            "error": {"message": self.to_string(), "type": kind, "param": null, "code": code}
        })
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Busy => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        match self {
            ApiError::Busy => {
                r.insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()));
            }
            ApiError::MethodNotAllowed(allow) => {
                r.insert_header(("Allow", allow.clone()));
            }
            _ => {}
        }
        r.json(self.body())
    }
}

/// A search.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    /// What to search for.
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    query: String,
    /// How many hits (default 10).
    #[schemars(range(min = 1, max = MAX_K))]
    #[serde(default, deserialize_with = "whole_number")]
    k: Option<usize>,
}

/// A question for a cited answer.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AskRequest {
    /// The question.
    #[schemars(length(min = 1), regex(pattern = r"\S"))]
    question: String,
    /// How many passages to give the generator (default 5).
    #[schemars(range(min = 1, max = MAX_K))]
    #[serde(default, deserialize_with = "whole_number")]
    k: Option<usize>,
    /// A JSON Schema: the answer is JSON that validates against it (in `json`).
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    schema: Option<serde_json::Value>,
    /// Verify the answer's sentences against their passages (default: the server's setting).
    verify: Option<bool>,
    /// Stream the answer as server-sent events, shaped as chat completion chunks.
    #[serde(default)]
    stream: bool,
}

/// An optional whole number, as JSON Schema counts them: `34.0` is the integer 34 there
/// (and to clients that send every number as a float), though serde refuses it.
fn whole_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let x = n
        .as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                .map(|f| f as u64)
        })
        .ok_or_else(|| {
            D::Error::custom(format!("expected a whole number of at least 0, got {n}"))
        })?;
    T::try_from(x)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{n} is too large")))
}

fn authorize(req: &HttpRequest, state: &State) -> Result<(), ApiError> {
    // Without keys any `Authorization` header is accepted (clients send one regardless).
    if !state.keys.required() {
        return Ok(());
    }
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| state.keys.accepts(g)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn check(text: &str, what: &str, k: Option<usize>, default_k: usize) -> Result<usize, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("`{what}` must not be empty")));
    }
    check_k(k, default_k)
}

/// `k`, or `default_k` when not given, within 1..=[`MAX_K`].
fn check_k(k: Option<usize>, default_k: usize) -> Result<usize, ApiError> {
    let k = k.unwrap_or(default_k);
    if k == 0 || k > MAX_K {
        return Err(ApiError::BadRequest(format!(
            "`k` must be between 1 and {MAX_K}"
        )));
    }
    Ok(k)
}

/// An answer held to a JSON Schema; a schema llama.cpp cannot turn into a grammar is the
/// client's error, named after the field `what` that held it.
fn schema_kind(schema: &serde_json::Value, what: &str) -> Result<AnswerKind, ApiError> {
    let text = schema.to_string();
    sovrag_generate::grammar::schema_grammar(&text)
        .map_err(|e| ApiError::BadRequest(format!("`{what}`: {e}")))?;
    Ok(AnswerKind::Schema(text))
}

async fn run<T: Send + 'static>(
    state: &State,
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T, ApiError> {
    match state.rt.spawn(fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            log_failure(&e);
            Err(ApiError::from_engine(e))
        }
        Err(e) => Err(ApiError::Internal(format!("task failed: {e}"))),
    }
}

/// An answer stopped because its client went away is routine; anything else is an error.
fn log_failure(e: &anyhow::Error) {
    match e.downcast_ref::<sovrag_generate::Error>() {
        Some(sovrag_generate::Error::Cancelled) => {
            tracing::info!("answer stopped: its client went away")
        }
        _ => tracing::error!("{e:#}"),
    }
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document.
async fn openapi_json(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    static DOCUMENT: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| openapi::document(&operations()));
    Ok(HttpResponse::Ok().json(&*DOCUMENT))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

async fn query(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Json<QueryRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body = body.into_inner();
    let k = check(&body.query, "query", body.k, 10)?;
    let engine = state.engine.clone();
    let hits = run(&state, async move { engine.query(&body.query, k).await }).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "hits": hits })))
}

async fn ask(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Json<AskRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body = body.into_inner();
    let k = check(&body.question, "question", body.k, 5)?;
    let kind = match &body.schema {
        Some(schema) => schema_kind(schema, "schema")?,
        None => AnswerKind::Prose,
    };
    let engine = state.engine.clone();
    let job = openai::Job {
        question: body.question,
        history: Vec::new(),
        k,
        model: engine.default_model(),
        opts: AskOptions {
            kind,
            verify: body.verify.unwrap_or(engine.config.verify),
            ..AskOptions::default()
        },
    };
    if body.stream {
        return openai::stream(&state, job, true);
    }
    let (_, _, answer) = openai::answer_whole(&state, job).await?;
    Ok(HttpResponse::Ok().json(answer))
}

async fn status(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let engine = state.engine.clone();
    let s = run(&state, async move { engine.status().await }).await?;
    Ok(HttpResponse::Ok().json(s))
}

/// `GET /v1/documents/{doc_id}`: the text a document was indexed with, with its pages and
/// headings; citations' line numbers count its lines.
async fn document(
    req: HttpRequest,
    state: web::Data<State>,
    doc_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let doc_id = doc_id.into_inner();
    // Ids are hex digests; anything else names no document (and never reaches a filter).
    if doc_id.is_empty() || doc_id.len() > 64 || !doc_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::NotFound);
    }
    let engine = state.engine.clone();
    match run(&state, async move { engine.document(&doc_id).await }).await? {
        Some(doc) => Ok(HttpResponse::Ok().json(doc)),
        None => Err(ApiError::NotFound),
    }
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

fn json_error(err: error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        error::JsonPayloadError::Overflow { .. }
        | error::JsonPayloadError::OverflowKnownLength { .. } => ApiError::TooLarge.into(),
        error::JsonPayloadError::ContentType => {
            ApiError::BadRequest("send a JSON body with `Content-Type: application/json`".into())
                .into()
        }
        other => ApiError::BadRequest(format!("invalid JSON body: {other}")).into(),
    }
}

/// CORS for the origins allowed (`--cors-origin`), and for none by default: a browser page
/// from an allowed origin gets `Access-Control-Allow-Origin` naming it (never `*`), and its
/// preflight a `204`; any other origin gets no CORS header, so its browser keeps the
/// response from it.
fn cors<S>(
    origins: &[String],
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> futures::future::LocalBoxFuture<
    'static,
    Result<actix_web::dev::ServiceResponse, actix_web::Error>,
>
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
    S::Future: 'static,
{
    use actix_web::http::header::{self, HeaderValue};
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| origins.iter().any(|a| a == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == actix_web::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let add = |h: &mut header::HeaderMap, origin: HeaderValue| {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    };
    if let (Some(origin), true) = (allowed.clone(), preflight) {
        let mut res = HttpResponse::NoContent();
        res.insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            "GET, POST, DELETE, OPTIONS",
        ))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "authorization, content-type",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"));
        let mut res = res.finish();
        add(res.headers_mut(), origin);
        return Box::pin(async move { Ok(req.into_response(res)) });
    }
    let fut = srv.call(req);
    Box::pin(async move {
        let mut res = fut.await?;
        if let Some(origin) = allowed {
            add(res.headers_mut(), origin);
        }
        Ok(res)
    })
}

use openapi::{
    Op, answer, any_object, array_of, chat_completion, document_text, embeddings, hit,
    index_status, kept_answer, model, object, report, string,
};

/// The API's routes. Each line registers a handler and describes it for `/openapi.json`,
/// so the document lists exactly what the server answers.
macro_rules! routes {
    ($( $method:ident $path:literal => $handler:path, $op:expr; )*) => {
        fn register(cfg: &mut web::ServiceConfig) {
            $( cfg.route($path, web::$method().to($handler)); )*
            // Tried after the routes above: a known path asked with another method.
            let mut allowed: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
            $( allowed.entry($path).or_default().push(stringify!($method).to_uppercase()); )*
            for (path, methods) in allowed {
                let allow = methods.join(", ");
                cfg.route(
                    path,
                    web::route().to(move || {
                        let allow = allow.clone();
                        async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow)) }
                    }),
                );
            }
        }

        fn operations() -> Vec<openapi::Op> {
            vec![$( $op.at(stringify!($method), $path) ),*]
        }
    };
}

routes! {
    get "/" => page, Op::content("The web page", "text/html").public();
    get "/healthz" => healthz, Op::json("Liveness", object(&[("status", string())])).public();
    get "/openapi.json" => openapi_json, Op::json("This document", any_object());
    post "/v1/query" => query,
        Op::json("Hybrid search", object(&[("hits", array_of(hit()))])).body::<QueryRequest>();
    post "/v1/ask" => ask,
        Op::json("A cited answer (server-sent events with `stream`)", answer())
            .body::<AskRequest>()
            .streams();
    get "/v1/status" => status, Op::json("The index and what it is doing", index_status());
    get "/v1/documents/{doc_id}" => document,
        Op::json("A document's indexed text, which citations' lines count", document_text());
    post "/v1/chat/completions" => openai::chat,
        Op::json("A cited answer as an OpenAI chat completion", chat_completion())
            .body::<openai::ChatRequest>()
            .streams();
    get "/v1/models" => openai::models,
        Op::json("The generators available", object(&[("object", string()), ("data", array_of(model()))]));
    get "/v1/models/{id}" => openai::model, Op::json("One generator", model());
    post "/v1/embeddings" => openai::embeddings,
        Op::json("Embeddings from the shipped model", embeddings()).body::<openai::EmbeddingsRequest>();
    post "/v1/feedback" => answers::feedback,
        Op::json("Rates a kept answer", object(&[("answer_id", string()), ("feedback", any_object())]))
            .body::<answers::FeedbackRequest>();
    get "/v1/answers/{id}" => answers::get, Op::json("A kept answer", kept_answer());
    delete "/v1/answers/{id}" => answers::delete, Op::no_content("Removes a kept answer");
    get "/v1/report" => answers::report,
        Op::json("Usage, cost avoided and the sovereignty scores", report()).query(
            "days",
            json!({"type": "integer", "minimum": 1, "maximum": 3660}),
            "days counted back from today (default 30)",
        );
    get "/metrics" => metrics::metrics, Op::content("Prometheus metrics", "text/plain");
}

/// Resolves `bind` and refuses a non-loopback address without an API key: the index is
/// someone's private documents.
pub fn check_bind(bind: &str, keys_required: bool) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .with_context(|| format!("--bind {bind}: expected HOST:PORT, e.g. 127.0.0.1:7878"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "--bind {bind} resolves to no address");
    if !keys_required && let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "refusing to listen on {open} (not loopback) without an API key: pass --api-key KEY or set SOVRAG_API_KEY, or bind to 127.0.0.1"
        );
    }
    Ok(addrs)
}

/// Serves the API until the process is stopped.
pub async fn serve(engine: Arc<Engine>, addrs: Vec<SocketAddr>, keys: Keys) -> Result<()> {
    let running = engine.config.max_concurrent_answers;
    let origins: Arc<Vec<String>> = Arc::new(engine.config.cors_origins.clone());
    let state = web::Data::new(State {
        engine,
        rt: tokio::runtime::Handle::current(),
        keys,
        admitted: Arc::new(Semaphore::new(running + MAX_WAITING_ANSWERS)),
        running: Arc::new(Semaphore::new(running)),
        requests: metrics::Requests::default(),
    });
    let server = HttpServer::new(move || {
        let origins = origins.clone();
        let observed = state.clone();
        App::new()
            .wrap_fn(move |req, srv| cors(&origins, req, srv))
            // Outermost: every request is counted, refused ones too. Routes are the
            // patterns (`/v1/documents/{doc_id}`), and any unknown path is `unmatched`, so
            // a scan of random paths cannot grow the series without bound.
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service as _;
                let started = std::time::Instant::now();
                let method = req.method().to_string();
                let observed = observed.clone();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    observed
                        .requests
                        .observe(&route, &method, res.status().as_u16(), started);
                    Ok(res)
                }
            })
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY)
                    .error_handler(json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(|err, _req| {
                ApiError::BadRequest(format!("invalid query string: {err}")).into()
            }))
            .configure(register)
            .default_service(web::to(not_found))
    })
    .workers(2)
    .bind(&addrs[..])
    .with_context(|| format!("cannot listen on {addrs:?}"))?;
    for a in server.addrs() {
        println!(
            "sovrag: serving on http://{a}/ (API: POST /v1/query, POST /v1/ask, GET /v1/documents/ID, POST /v1/feedback, GET /v1/report; OpenAI-compatible: POST /v1/chat/completions, GET /v1/models, POST /v1/embeddings)"
        );
    }
    server.run().await.context("HTTP server")
}

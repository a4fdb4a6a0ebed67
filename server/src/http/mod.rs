//! The HTTP API and the web page (actix-web).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, error, web};
use anyhow::{Context, Result};
use serde::Deserialize;

use crate::engine::Engine;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// Largest `k` a client may ask for.
const MAX_K: usize = 100;

const PAGE: &str = include_str!("../web/index.html");

struct State {
    engine: Arc<Engine>,
    // The engine's async work (LanceDB) runs on the main multi-threaded runtime, not on
    // actix's single-threaded worker runtimes.
    rt: tokio::runtime::Handle,
    api_key: Option<String>,
}

/// Every error the API returns, and its HTTP status: one table.
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
    #[error("{0}")]
    Internal(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    query: String,
    k: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskRequest {
    question: String,
    k: Option<usize>,
    /// A JSON Schema: the answer is JSON that validates against it (in `json`).
    schema: Option<serde_json::Value>,
    /// Verify the answer's sentences against their passages (default: the server's setting).
    verify: Option<bool>,
}

fn authorize(req: &HttpRequest, state: &State) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else {
        return Ok(());
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compare without an early exit so timing does not leak the key.
    let ok = given.is_some_and(|g| {
        g.len() == key.len()
            && g.bytes()
                .zip(key.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn check(text: &str, what: &str, k: Option<usize>, default_k: usize) -> Result<usize, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("`{what}` must not be empty")));
    }
    let k = k.unwrap_or(default_k);
    if k == 0 || k > MAX_K {
        return Err(ApiError::BadRequest(format!(
            "`k` must be between 1 and {MAX_K}"
        )));
    }
    Ok(k)
}

async fn run<T: Send + 'static>(
    state: &State,
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T, ApiError> {
    match state.rt.spawn(fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!("{e:#}");
            Err(ApiError::Internal(format!("{e:#}")))
        }
        Err(e) => Err(ApiError::Internal(format!("task failed: {e}"))),
    }
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
        Some(schema) => {
            let text = schema.to_string();
            // A schema llama.cpp cannot turn into a grammar is the client's error.
            sovrag_generate::grammar::schema_grammar(&text)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            sovrag_generate::AnswerKind::Schema(text)
        }
        None => sovrag_generate::AnswerKind::Prose,
    };
    let engine = state.engine.clone();
    let opts = sovrag_generate::AskOptions {
        kind,
        verify: body.verify.unwrap_or(engine.config.verify),
        ..sovrag_generate::AskOptions::default()
    };
    let answer = run(&state, async move {
        engine.ask(&body.question, k, opts, |_| {}).await
    })
    .await?;
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

/// Resolves `bind` and refuses a non-loopback address without an API key: the index is
/// someone's private documents.
pub fn check_bind(bind: &str, api_key: Option<&str>) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = bind
        .to_socket_addrs()
        .with_context(|| format!("--bind {bind}: expected HOST:PORT, e.g. 127.0.0.1:7878"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "--bind {bind} resolves to no address");
    if api_key.is_none()
        && let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback())
    {
        anyhow::bail!(
            "refusing to listen on {open} (not loopback) without an API key: pass --api-key KEY or set SOVRAG_API_KEY, or bind to 127.0.0.1"
        );
    }
    Ok(addrs)
}

/// Serves the API until the process is stopped.
pub async fn serve(
    engine: Arc<Engine>,
    addrs: Vec<SocketAddr>,
    api_key: Option<String>,
) -> Result<()> {
    let state = web::Data::new(State {
        engine,
        rt: tokio::runtime::Handle::current(),
        api_key,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY)
                    .error_handler(json_error),
            )
            .route("/", web::get().to(page))
            .route("/healthz", web::get().to(healthz))
            .route("/v1/query", web::post().to(query))
            .route("/v1/ask", web::post().to(ask))
            .route("/v1/status", web::get().to(status))
            .route("/v1/documents/{doc_id}", web::get().to(document))
            .default_service(web::to(not_found))
    })
    .workers(2)
    .bind(&addrs[..])
    .with_context(|| format!("cannot listen on {addrs:?}"))?;
    for a in server.addrs() {
        println!(
            "sovrag: serving on http://{a}/ (API: POST /v1/query, POST /v1/ask, GET /v1/documents/ID)"
        );
    }
    server.run().await.context("HTTP server")
}

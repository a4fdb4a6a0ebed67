//! Kept answers over HTTP: feedback on them (`POST /v1/feedback`), reading and removing one
//! (`GET`/`DELETE /v1/answers/{id}`), and the usage report (`GET /v1/report`).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{ApiError, State, authorize, run};
use crate::answers::Rating;

/// A user's verdict on a kept answer, with the answer they wanted.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedbackRequest {
    answer_id: String,
    rating: Rating,
    #[serde(default)]
    correction: Option<String>,
}

/// The id as a client may hold it: a chat completion's `id` is `chatcmpl-` and the answer's.
fn answer_id(id: &str) -> &str {
    id.strip_prefix("chatcmpl-").unwrap_or(id)
}

/// `POST /v1/feedback {answer_id, rating: "up"|"down", correction?}`.
pub(super) async fn feedback(
    req: HttpRequest,
    state: web::Data<State>,
    body: web::Json<FeedbackRequest>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let body = body.into_inner();
    if body.correction.as_ref().is_some_and(|c| c.len() > 20_000) {
        return Err(ApiError::BadRequest(
            "`correction` is over 20,000 bytes".into(),
        ));
    }
    let engine = state.engine.clone();
    let entry = run(&state, async move {
        engine
            .answers
            .feedback(answer_id(&body.answer_id), body.rating, body.correction)
    })
    .await?;
    match entry {
        Some(e) => Ok(HttpResponse::Ok().json(serde_json::json!({
            "answer_id": e.answer_id,
            "feedback": e.feedback,
        }))),
        None => Err(ApiError::NotFound),
    }
}

/// `GET /v1/answers/{id}`: the kept answer with its question, passages and feedback.
pub(super) async fn get(
    req: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let engine = state.engine.clone();
    let id = id.into_inner();
    match run(&state, async move { engine.answers.get(answer_id(&id)) }).await? {
        Some(e) => Ok(HttpResponse::Ok().json(e)),
        None => Err(ApiError::NotFound),
    }
}

/// `DELETE /v1/answers/{id}`: removes the kept answer from disk.
pub(super) async fn delete(
    req: HttpRequest,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let engine = state.engine.clone();
    let id = id.into_inner();
    if run(&state, async move { engine.answers.delete(answer_id(&id)) }).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize)]
pub(super) struct ReportQuery {
    days: Option<u32>,
}

/// `GET /v1/report?days=N`: the same JSON as `sovrag report --json`.
pub(super) async fn report(
    req: HttpRequest,
    state: web::Data<State>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let days = q.days.unwrap_or(30);
    if !(1..=3660).contains(&days) {
        return Err(ApiError::BadRequest(
            "`days` must be between 1 and 3660".into(),
        ));
    }
    let config = state.engine.config.clone();
    let r = run(&state, async move {
        crate::report::build(&config.data_dir, config.costs.as_ref(), days)
    })
    .await?;
    Ok(HttpResponse::Ok().json(r))
}

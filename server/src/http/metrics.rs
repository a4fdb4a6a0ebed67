//! `GET /metrics`: Prometheus text format. Requests and latency histograms per route (from
//! a middleware), the process's usage counters (answers, tokens embedded, prompted and
//! generated, model loads, from the usage ledger), the answer queue, and the index
//! (documents, chunks, bytes on disk).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};

use super::{ApiError, State, authorize, run};

/// Latency histogram bounds, in seconds: searches land in the first few, answers in the
/// last.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default)]
struct Series {
    /// Per bucket in [`BUCKETS`], then +Inf: requests that took at most that long.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// Requests seen, by (route, method, status).
#[derive(Default)]
pub(super) struct Requests(Mutex<BTreeMap<(String, String, u16), Series>>);

impl Requests {
    pub(super) fn observe(&self, route: &str, method: &str, status: u16, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = m
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default();
        let at = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        s.counts[at] += 1;
        s.sum += secs;
    }
}

/// Bytes of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value, escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) async fn metrics(
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let engine = state.engine.clone();
    let status = run(&state, async move { engine.status().await }).await?;
    let data_dir = state.engine.config.data_dir.clone();
    let bytes = web::block(move || size_of(&data_dir))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut out = String::new();

    metric(
        &mut out,
        "sovrag_http_requests_total",
        "counter",
        "HTTP requests by route, method and status.",
    );
    let requests = state.requests.0.lock().unwrap_or_else(|e| e.into_inner());
    for ((route, method, code), s) in requests.iter() {
        let _ = writeln!(
            out,
            "sovrag_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{code}\"}} {}",
            label(route),
            s.counts.iter().sum::<u64>()
        );
    }
    metric(
        &mut out,
        "sovrag_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by route and method (to the response's start for streams).",
    );
    let mut by_route: BTreeMap<(String, String), Series> = BTreeMap::new();
    for ((route, method, _), s) in requests.iter() {
        let t = by_route.entry((route.clone(), method.clone())).or_default();
        for (a, b) in t.counts.iter_mut().zip(s.counts) {
            *a += b;
        }
        t.sum += s.sum;
    }
    drop(requests);
    for ((route, method), s) in &by_route {
        let labels = format!("route=\"{}\",method=\"{method}\"", label(route));
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += s.counts[i];
            let _ = writeln!(
                out,
                "sovrag_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += s.counts[BUCKETS.len()];
        let _ = writeln!(
            out,
            "sovrag_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n\
             sovrag_http_request_duration_seconds_sum{{{labels}}} {}\n\
             sovrag_http_request_duration_seconds_count{{{labels}}} {cumulative}",
            s.sum
        );
    }

    let c = crate::usage::process_totals().unwrap_or_default();
    for (name, help, v) in [
        ("sovrag_answers_total", "Answers generated.", c.answers),
        (
            "sovrag_searches_total",
            "Searches run (each answer runs one).",
            c.searches,
        ),
        (
            "sovrag_embedded_tokens_total",
            "Tokens run through the embedding model (updated every 2 s).",
            c.embedded_tokens,
        ),
        (
            "sovrag_prompt_tokens_total",
            "Prompt tokens given to generators.",
            c.prompt_tokens,
        ),
        (
            "sovrag_generated_tokens_total",
            "Tokens generated.",
            c.generated_tokens,
        ),
        (
            "sovrag_model_loads_total",
            "Generator models loaded.",
            c.model_loads,
        ),
        (
            "sovrag_model_load_failures_total",
            "Generator model loads that failed.",
            c.model_load_failures,
        ),
    ] {
        metric(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let running = state.engine.config.max_concurrent_answers;
    let busy = running.saturating_sub(state.running.available_permits());
    let admitted =
        (running + super::MAX_WAITING_ANSWERS).saturating_sub(state.admitted.available_permits());
    for (name, kind, help, v) in [
        (
            "sovrag_answers_running",
            "gauge",
            "Answers being written now.",
            busy as u64,
        ),
        (
            "sovrag_answers_waiting",
            "gauge",
            "Answers admitted and waiting for a generator slot.",
            admitted.saturating_sub(busy) as u64,
        ),
        (
            "sovrag_index_queue",
            "gauge",
            "Changed paths the watcher has taken in and not yet applied.",
            status.queue as u64,
        ),
        (
            "sovrag_documents",
            "gauge",
            "Documents indexed.",
            status.documents as u64,
        ),
        (
            "sovrag_chunks",
            "gauge",
            "Passages indexed.",
            status.chunks as u64,
        ),
        (
            "sovrag_index_bytes",
            "gauge",
            "Bytes in the data dir (indexes, extraction cache, answer log, ledger).",
            bytes,
        ),
        (
            "sovrag_problem_files",
            "gauge",
            "Files skipped or indexed with a warning.",
            status.problem_count as u64,
        ),
    ] {
        metric(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out))
}

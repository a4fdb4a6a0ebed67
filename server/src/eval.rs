//! `sovrag eval`: retrieval quality and speed on a BEIR-format question set, through the
//! same engine and search path the server uses; answer quality with `--qa` (see [`qa`]); the
//! stores at up to millions of chunks with `--scale-bench` (see [`scale`]).
//!
//! Input folder: `corpus.jsonl` (`{"_id", "title", "text"}` per line), `queries.jsonl`
//! (`{"_id", "text"}`), `qrels/test.tsv` (`query-id<TAB>corpus-id<TAB>score`, header allowed).

pub mod qa;
pub mod scale;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sovrag_ingest::load::Document;
use sovrag_retrieve::SearchMode;
use sovrag_retrieve::fusion::Fusion;
use sovrag_retrieve::metrics::{Judgements, Scores, score_run};

use crate::config::Config;
use crate::engine::Engine;

/// Which modes to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalMode {
    Bm25,
    Dense,
    Hybrid,
    /// Hybrid with reciprocal-rank fusion instead of the default convex combination.
    HybridRrf,
    All,
}

impl EvalMode {
    fn modes(self) -> Vec<(&'static str, SearchMode)> {
        let all = [
            ("bm25", SearchMode::Bm25),
            ("dense", SearchMode::Dense),
            ("hybrid", SearchMode::default()),
            ("hybrid_rrf", SearchMode::Hybrid(Fusion::Rrf)),
        ];
        match self {
            EvalMode::Bm25 => vec![all[0]],
            EvalMode::Dense => vec![all[1]],
            EvalMode::Hybrid => vec![all[2]],
            EvalMode::HybridRrf => vec![all[3]],
            EvalMode::All => all.to_vec(),
        }
    }
}

#[derive(Deserialize)]
struct BeirDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct BeirQuery {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// The index of an eval corpus, kept between runs: what building it cost.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct IndexInfo {
    documents: usize,
    chunks: usize,
    index_seconds: f64,
    embed_seconds: f64,
    embed_tokens: usize,
    embed_tokens_per_s: f64,
}

#[derive(Serialize, Default)]
pub(crate) struct Latency {
    p50_ms: f64,
    p99_ms: f64,
}

pub(crate) fn latency(mut v: Vec<Duration>) -> Latency {
    if v.is_empty() {
        return Latency::default();
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    Latency {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

pub(crate) fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_jsonl(&text, path)
}

/// One value per non-blank line; errors name `path:line`.
fn parse_jsonl<T: for<'de> Deserialize<'de>>(text: &str, path: &Path) -> Result<Vec<T>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

fn read_qrels(path: &Path) -> Result<HashMap<String, Judgements>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out: HashMap<String, Judgements> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.trim().split('\t').collect();
        // Skips the header and malformed lines, as BEIR's loader does.
        let Some(score) = parts.last().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        if parts.len() < 3 || score <= 0 {
            continue;
        }
        out.entry(parts[0].to_string())
            .or_default()
            .insert(parts[parts.len() - 2].trim().to_string(), score as u32);
    }
    Ok(out)
}

/// Embedding throughput on exactly the inputs `shared/bench/pyref.py` uses (title + " " +
/// text of the first `limit` documents, 256-token cap), so the two figures compare directly.
pub async fn embed_bench(config: Config, beir: &Path, limit: usize, json: bool) -> Result<()> {
    let docs: Vec<BeirDoc> = read_jsonl(&beir.join("corpus.jsonl"))?;
    let texts: Vec<String> = docs
        .into_iter()
        .take(limit)
        .map(|d| format!("{} {}", d.title, d.text).trim().to_string())
        .collect();
    let models = sovrag_ingest::models::ModelPaths::locate(config.models.as_deref())?;
    let threads = config.threads;
    let m = models.clone();
    let (tokens, secs) = tokio::task::spawn_blocking(move || -> Result<(usize, f64)> {
        let embedder = sovrag_ingest::embed::Embedder::load(&m, threads)?;
        let chunker = sovrag_ingest::chunk::Chunker::new(&m, 200, 0)?;
        let tokens: usize = texts.iter().map(|t| chunker.model_tokens(t)).sum();
        let t = std::time::Instant::now();
        embedder.embed_documents(&texts)?;
        Ok((tokens, t.elapsed().as_secs_f64()))
    })
    .await??;
    let rate = tokens as f64 / secs;
    if json {
        println!(
            "{}",
            serde_json::json!({"embed_docs": limit, "embed_tokens": tokens, "embed_s": secs, "tokens_per_s": rate, "threads": threads})
        );
    } else {
        println!("embedded {limit} documents, {tokens} tokens in {secs:.2}s: {rate:.0} tokens/s");
    }
    Ok(())
}

/// Opens the scratch index of `dir/corpus.jsonl` (under the data dir, keyed by the corpus's
/// hash and the chunking), building it first unless a complete one is there.
pub(crate) async fn open_indexed(
    config: &mut Config,
    dir: &Path,
) -> Result<(std::sync::Arc<Engine>, IndexInfo)> {
    let corpus_path = dir.join("corpus.jsonl");
    let corpus_bytes = std::fs::read(&corpus_path)
        .with_context(|| format!("reading {}", corpus_path.display()))?;
    // The scratch index is reused while the corpus and the chunking are unchanged.
    let key = {
        let mut h = Sha256::new();
        h.update(&corpus_bytes);
        h.update(format!(
            "v1 {} {}",
            config.chunk_tokens, config.chunk_overlap
        ));
        hex::encode(&h.finalize()[..8])
    };
    config.data_dir = config.data_dir.join("eval").join(&key);
    // The scratch index is this node's own, even beside an index on object storage.
    config.remote = None;
    config.role = sovrag_retrieve::Role::Writer;
    // Benchmark answers are not the user's: they are counted in the ledger, not kept.
    config.answer_log = false;
    let info_path = config.data_dir.join("index-info.json");
    let cached: Option<IndexInfo> = std::fs::read(&info_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if cached.is_none() && config.data_dir.exists() {
        // An interrupted build: start it over rather than trust a partial index.
        std::fs::remove_dir_all(&config.data_dir)
            .with_context(|| format!("clearing {}", config.data_dir.display()))?;
    }
    let engine = Engine::open(config.clone()).await?;
    let info = match cached {
        Some(info) => {
            eprintln!("eval: reusing the index in {}", config.data_dir.display());
            info
        }
        None => {
            // The bytes already read for the key: the corpus is read from disk once.
            let text = String::from_utf8(corpus_bytes)
                .with_context(|| format!("{} is not UTF-8", corpus_path.display()))?;
            let docs: Vec<BeirDoc> = parse_jsonl(&text, &corpus_path)?;
            eprintln!(
                "eval: indexing {} documents into {}",
                docs.len(),
                config.data_dir.display()
            );
            let docs: Vec<Document> = docs
                .into_iter()
                .map(|d| Document {
                    content_hash: hex::encode(Sha256::digest(d.text.as_bytes())),
                    path: PathBuf::from(d.id),
                    markdown: false,
                    title: d.title,
                    text: d.text,
                    warning: None,
                    format: None,
                    pages: Vec::new(),
                })
                .collect();
            let r = engine
                .index_documents(docs, &|done, total| {
                    if done % 1024 < 512 || done == total {
                        eprint!("\reval: {done}/{total} documents");
                    }
                })
                .await?;
            eprintln!();
            let info = IndexInfo {
                documents: r.indexed,
                chunks: r.chunks,
                index_seconds: r.seconds,
                embed_seconds: r.embed_seconds,
                embed_tokens: r.embed_tokens,
                embed_tokens_per_s: r.embed_tokens as f64 / r.embed_seconds.max(1e-9),
            };
            std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)?;
            info
        }
    };

    Ok((engine, info))
}

pub async fn run(
    mut config: Config,
    beir: &Path,
    mode: EvalMode,
    k: usize,
    json: bool,
    run_out: Option<PathBuf>,
) -> Result<()> {
    anyhow::ensure!((1..=1000).contains(&k), "--k must be between 1 and 1000");
    let (engine, info) = open_indexed(&mut config, beir).await?;

    let queries: Vec<BeirQuery> = read_jsonl(&beir.join("queries.jsonl"))?;
    let qrels = read_qrels(&beir.join("qrels").join("test.tsv"))?;
    let queries: Vec<BeirQuery> = queries
        .into_iter()
        .filter(|q| qrels.contains_key(&q.id))
        .collect();
    anyhow::ensure!(
        !queries.is_empty(),
        "no query in queries.jsonl has judgements in qrels/test.tsv"
    );

    let mut results = serde_json::Map::new();
    let mut timing = serde_json::Map::new();
    let mut table = Vec::new();
    let several = mode == EvalMode::All;
    for (name, mode) in mode.modes() {
        let mut run: HashMap<String, Vec<(String, f32)>> = HashMap::new();
        let (mut t_embed, mut t_wait, mut t_bm25, mut t_vec, mut t_fuse, mut t_total) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for q in &queries {
            let started = std::time::Instant::now();
            // A document is as good as its best chunk; ask for enough chunks to fill k documents.
            let (hits, stages, embed) = engine.search(&q.text, k * 3, mode).await?;
            let mut docs: Vec<(String, f32)> = Vec::with_capacity(k);
            for h in hits {
                if !docs.iter().any(|(d, _)| *d == h.path) {
                    docs.push((h.path, h.score));
                }
            }
            docs.truncate(k);
            t_total.push(started.elapsed());
            t_embed.push(embed);
            t_bm25.push(stages.bm25);
            t_vec.push(stages.vector);
            t_wait.push(stages.wait);
            t_fuse.push(stages.fusion);
            run.insert(q.id.clone(), docs);
        }
        let ranked: HashMap<String, Vec<String>> = run
            .iter()
            .map(|(q, d)| (q.clone(), d.iter().map(|(id, _)| id.clone()).collect()))
            .collect();
        let scores: Scores = score_run(&ranked, &qrels);
        table.push((name, scores));
        results.insert(name.into(), serde_json::to_value(scores)?);
        timing.insert(
            format!("{name}_query"),
            serde_json::json!({
                "embed": latency(t_embed),
                "bm25": latency(t_bm25),
                "embed_wait": latency(t_wait),
                "vector": latency(t_vec),
                "fusion": latency(t_fuse),
                "total": latency(t_total),
            }),
        );
        if let Some(out) = &run_out {
            // One mode writes FILE; several write FILE.<mode> each.
            let file = if several {
                PathBuf::from(format!("{}.{name}", out.display()))
            } else {
                out.clone()
            };
            write_trec(&file, &run, name)?;
        }
    }
    timing.insert("index".into(), serde_json::to_value(&info)?);

    if json {
        results.insert("timing".into(), serde_json::Value::Object(timing));
        println!("{}", serde_json::Value::Object(results));
        return Ok(());
    }
    println!(
        "{} queries, {} documents ({} chunks)",
        queries.len(),
        info.documents,
        info.chunks
    );
    println!(
        "{:<8} {:>8} {:>11} {:>8}",
        "mode", "nDCG@10", "Recall@100", "MRR@10"
    );
    for (name, s) in &table {
        println!(
            "{:<10} {:>8.4} {:>11.4} {:>8.4}",
            name, s.ndcg_at_10, s.recall_at_100, s.mrr_at_10
        );
    }
    println!(
        "index: {:.1}s; embedding {:.0} tokens/s ({} tokens in {:.1}s)",
        info.index_seconds, info.embed_tokens_per_s, info.embed_tokens, info.embed_seconds
    );
    for (name, _) in &table {
        if let Some(t) = timing.get(&format!("{name}_query")) {
            let f = |s: &str| {
                format!(
                    "{s} p50 {:.2} / p99 {:.2} ms",
                    t[s]["p50_ms"].as_f64().unwrap_or(0.0),
                    t[s]["p99_ms"].as_f64().unwrap_or(0.0)
                )
            };
            println!(
                "{name} query latency: {}; {} (overlaps bm25; {} of it not hidden); {}; {}; {}",
                f("total"),
                f("embed"),
                f("embed_wait"),
                f("bm25"),
                f("vector"),
                f("fusion")
            );
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

fn write_trec(path: &Path, run: &HashMap<String, Vec<(String, f32)>>, tag: &str) -> Result<()> {
    let mut out = String::new();
    let mut qids: Vec<&String> = run.keys().collect();
    qids.sort();
    for q in qids {
        for (rank, (doc, score)) in run[q].iter().enumerate() {
            out.push_str(&format!(
                "{q} Q0 {doc} {} {score:.6} sovrag-{tag}\n",
                rank + 1
            ));
        }
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

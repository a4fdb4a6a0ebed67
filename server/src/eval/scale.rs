//! `sovrag eval --scale-bench`: the stores at sizes a real folder takes days to embed.
//!
//! Chunks are made from the real ones of an existing index (`--data-dir`): chunk `i` takes
//! the vector of one real chunk mixed with a little of another's and some noise, and that
//! chunk's sentences, rotated, with a sentence of the other. So the vectors keep the shape
//! of real embeddings (clusters of topics, a few near-duplicates) and BM25 sees real prose,
//! without embedding a million texts. Queries are real: the BEIR folder's questions,
//! embedded by the model. Each chunk is a function of its number, so exact search (the
//! reference for recall) is recomputed by streaming over the numbers rather than kept.
//!
//! For each size, in one store grown step by step: the time to write the chunks and to run
//! the store's housekeeping (which builds the vector index past the in-memory copy's size),
//! recall@10 of the vector search against exact search, hybrid search p50/p99 (query
//! vectors computed beforehand: the stores' time only), and this process's memory.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sovrag_retrieve::{Change, ChunkRecord, EMBEDDING_DIM, SearchMode, Store};

use super::{BeirQuery, read_jsonl};
use crate::config::Config;

/// Questions per size.
const QUERIES: usize = 200;
/// Chunks per write, as a bulk index run writes them.
const BATCH: usize = 10_000;

/// splitmix64: a chunk's randomness from its number alone.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

struct Source {
    vectors: Vec<Vec<f32>>,
    sentences: Vec<Vec<String>>,
}

impl Source {
    /// Chunk `i`'s two source chunks and its vector.
    fn vector(&self, i: usize, out: &mut [f32]) -> (usize, usize, u64) {
        let n = self.vectors.len() as u64;
        let seed = mix(i as u64);
        let (a, b) = ((seed % n) as usize, (mix(seed) % n) as usize);
        let mut r = mix(seed ^ 0x5DEE_CE66);
        for (d, o) in out.iter_mut().enumerate() {
            r = mix(r.wrapping_add(d as u64));
            // Uniform in [-1, 1): about a sixth of the vector's length in all.
            let noise = (r >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
            *o = 0.8 * self.vectors[a][d] + 0.2 * self.vectors[b][d] + 0.015 * noise;
        }
        let norm = out
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        out.iter_mut().for_each(|x| *x /= norm);
        (a, b, seed)
    }

    fn chunk(&self, i: usize) -> ChunkRecord {
        let mut vector = vec![0f32; EMBEDDING_DIM];
        let (a, b, seed) = self.vector(i, &mut vector);
        let s = &self.sentences[a];
        let turn = (seed >> 7) as usize % s.len().max(1);
        let mut text: Vec<&str> = s[turn..]
            .iter()
            .chain(&s[..turn])
            .map(String::as_str)
            .collect();
        if let Some(other) = self.sentences[b].first() {
            text.push(other);
        }
        let path = path(i);
        ChunkRecord {
            chunk_id: format!("{path}:0"),
            doc_id: format!("{i:016x}"),
            path,
            title: String::new(),
            start_line: 1,
            end_line: 1,
            text: text.join(" "),
            content_hash: format!("{seed:016x}"),
            vector,
        }
    }
}

/// Chunk `i`'s file (one chunk each, a thousand to a folder).
fn path(i: usize) -> String {
    format!("synthetic/{}/{i}.txt", i / 1000)
}

/// The paths of the exact 10 nearest of chunks `0..n` to each query, by streaming over them.
fn exact_top10(source: &Source, n: usize, queries: &[Vec<f32>]) -> Vec<Vec<String>> {
    let mut best: Vec<Vec<(f32, usize)>> = vec![Vec::with_capacity(11); queries.len()];
    let mut v = vec![0f32; EMBEDDING_DIM];
    for i in 0..n {
        source.vector(i, &mut v);
        for (q, top) in queries.iter().zip(&mut best) {
            let s: f32 = q.iter().zip(&v).map(|(a, b)| a * b).sum();
            if top.len() < 10 || s > top[top.len() - 1].0 {
                let at = top.partition_point(|&(t, _)| t >= s);
                top.insert(at, (s, i));
                top.truncate(10);
            }
        }
    }
    best.into_iter()
        .map(|t| t.into_iter().map(|(_, i)| path(i)).collect())
        .collect()
}

fn rss_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// `keep_in`: the synthetic store's folder, kept after the run and grown from on the next
/// (a temporary folder, removed at the end, without it).
pub async fn run(
    config: Config,
    beir: &Path,
    sizes: &[usize],
    keep_in: Option<&Path>,
    json: bool,
) -> Result<()> {
    let source = {
        let store = Store::open(&config.data_dir)
            .await
            .with_context(|| format!("opening the source index {}", config.data_dir.display()))?;
        let docs = store.documents().await?;
        // By path only: by path and hash, each chunk would come twice.
        let paths: Vec<&str> = docs.keys().map(String::as_str).collect();
        let mut chunks = store.chunks_of(&paths, &[]).await?;
        // In a fixed order: chunk i of the synthetic store is made from source chunk i.
        chunks.sort_unstable_by(|a, b| a.chunk_id.cmp(&b.chunk_id));
        anyhow::ensure!(
            chunks.len() >= 1000,
            "--scale-bench needs an index of at least 1,000 chunks at --data-dir (it has {})",
            chunks.len()
        );
        Source {
            sentences: chunks
                .iter()
                .map(|c| {
                    c.text
                        .split_inclusive(['.', '?', '!'])
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .collect(),
            vectors: chunks.into_iter().map(|c| c.vector).collect(),
        }
    };
    let questions: Vec<BeirQuery> = read_jsonl(&beir.join("queries.jsonl"))?;
    let questions: Vec<String> = questions
        .into_iter()
        .take(QUERIES)
        .map(|q| q.text)
        .collect();
    let models = sovrag_ingest::models::ModelPaths::locate(config.models.as_deref())?;
    let threads = config.threads;
    let qs = questions.clone();
    let vectors = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<f32>>> {
        let embedder = sovrag_ingest::embed::Embedder::load(&models, threads)?;
        qs.iter().map(|q| Ok(embedder.embed_query(q)?)).collect()
    })
    .await??;

    let dir = match keep_in {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("sovrag-scale-bench-{}", std::process::id())),
    };
    // Chunk i is a function of i and the source: a kept store made from the same source
    // holds chunks 0..n, and is grown from n. Any other is written again.
    let made_from = format!(
        "{} source chunks, {} sentences, chunks in chunk id order\n",
        source.vectors.len(),
        source.sentences.iter().map(Vec::len).sum::<usize>()
    );
    let stamp = dir.join("sovrag-scale-bench.source");
    if keep_in.is_none() || std::fs::read_to_string(&stamp).ok().as_deref() != Some(&made_from) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let store = Store::open(&dir).await?;
    if keep_in.is_some() {
        std::fs::write(&stamp, &made_from)
            .with_context(|| format!("writing {}", stamp.display()))?;
    }
    let mut written = store.counts().await?.1;
    eprintln!(
        "scale bench: {} source chunks, {} questions, store in {} ({written} chunks kept)",
        source.vectors.len(),
        questions.len(),
        dir.display()
    );
    let mut rows = Vec::new();
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    // A kept store larger than a size asked for cannot be measured at that size.
    sizes.retain(|&s| {
        let keep = s >= written;
        if !keep {
            eprintln!("scale bench: skipping {s} chunks: the kept store already holds {written}");
        }
        keep
    });
    for &size in &sizes {
        let started = Instant::now();
        while written < size {
            let end = (written + BATCH).min(size);
            let changes = (written..end)
                .map(|i| {
                    let c = source.chunk(i);
                    Change::Replace {
                        path: c.path.clone(),
                        chunks: vec![c],
                    }
                })
                .collect();
            store.apply(changes).await?;
            written = end;
            eprint!("\rscale bench: {written}/{size} chunks written");
        }
        let write_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        store.maintain(true).await?;
        let maintain_s = started.elapsed().as_secs_f64();
        eprintln!(
            "\rscale bench: {size} chunks: written in {write_s:.0}s, housekeeping {maintain_s:.0}s"
        );

        let exact = exact_top10(&source, size, &vectors);
        let mut found = 0usize;
        let (mut hybrid, mut bm25, mut vector) = (Vec::new(), Vec::new(), Vec::new());
        let mut vector_alone = Vec::new();
        for ((q, v), want) in questions.iter().zip(&vectors).zip(&exact) {
            let t = Instant::now();
            let (hits, _) = store
                .search_timed(q, async { Ok(v.clone()) }, 10, SearchMode::Dense)
                .await?;
            vector_alone.push(t.elapsed());
            found += hits.iter().filter(|h| want.contains(&h.path)).count();
            let t = Instant::now();
            let (_, times) = store
                .search_timed(q, async { Ok(v.clone()) }, 10, SearchMode::default())
                .await?;
            hybrid.push(t.elapsed());
            bm25.push(times.bm25);
            vector.push(times.vector);
        }
        hybrid.sort_unstable();
        bm25.sort_unstable();
        vector.sort_unstable();
        vector_alone.sort_unstable();
        let recall = found as f64 / (10 * questions.len()).max(1) as f64;
        let (p50, p99) = (percentile(&hybrid, 0.5), percentile(&hybrid, 0.99));
        let (bm25_p50, vector_p50) = (percentile(&bm25, 0.5), percentile(&vector, 0.5));
        let vector_alone_p50 = percentile(&vector_alone, 0.5);
        let (rss, peak) = (rss_mb("VmRSS:"), rss_mb("VmHWM:"));
        if !json {
            println!(
                "{size:>9} chunks: recall@10 {recall:.3}, hybrid p50 {p50:.1} ms p99 {p99:.1} ms (BM25 p50 {bm25_p50:.1}, vectors p50 {vector_p50:.1}; vector search alone p50 {vector_alone_p50:.1}), written {write_s:.0} s, housekeeping (index) {maintain_s:.0} s, RSS {rss:.0} MB (peak {peak:.0})"
            );
        }
        rows.push(serde_json::json!({
            "chunks": size,
            "recall_at_10": recall,
            "hybrid_p50_ms": p50,
            "hybrid_p99_ms": p99,
            "bm25_p50_ms": bm25_p50,
            "vector_p50_ms": vector_p50,
            "vector_alone_p50_ms": vector_alone_p50,
            "write_s": write_s,
            "housekeeping_s": maintain_s,
            "rss_mb": rss,
            "peak_rss_mb": peak,
        }));
    }
    if json {
        println!("{}", serde_json::Value::Array(rows));
    }
    drop(store);
    if keep_in.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

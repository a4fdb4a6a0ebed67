//! A copy of every vector held in memory, for exact nearest-neighbour search.
//!
//! LanceDB stays the record: every write goes to it first, and this copy is loaded from it on
//! open and updated after each write. The copy exists for latency: LanceDB's flat search reads
//! and decodes the vector column from its files on every query (about 15 ms for 12k chunks on
//! a 2-core machine), while a scan of vectors already in memory takes about a millisecond. It
//! holds no text (search results take theirs from tantivy), so it costs about 1.6 KB per chunk.

use std::collections::HashMap;

use crate::{ChunkRecord, EMBEDDING_DIM, Hit};

/// Above this many chunks the copy is not kept (about 400 MB) and searches go to LanceDB.
pub const MAX_CHUNKS: usize = 250_000;

struct Row {
    chunk_id: String,
    doc_id: String,
    path: String,
    start_line: u32,
    end_line: u32,
    /// 1/‖v‖, so a dot product gives the cosine without normalising per query.
    inv_norm: f32,
}

/// Slots of rows and their vectors; a removed row's slot is reused by the next insert.
#[derive(Default)]
pub struct Resident {
    rows: Vec<Option<Row>>,
    vectors: Vec<f32>,
    by_path: HashMap<String, Vec<usize>>,
    /// Each stored document's content hash, by path.
    hashes: HashMap<String, String>,
    free: Vec<usize>,
}

impl Resident {
    /// A copy holding `chunks`.
    pub fn from_chunks(chunks: &[ChunkRecord]) -> Self {
        let mut r = Resident::default();
        r.replace(&[], chunks);
        r
    }

    /// Live chunks.
    pub fn len(&self) -> usize {
        self.rows.len() - self.free.len()
    }

    /// Whether any chunk of `path` is stored.
    pub fn has_path(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// Removes every chunk of `paths`, then adds `chunks` (as `VectorStore::replace`).
    pub fn replace(&mut self, paths: &[&str], chunks: &[ChunkRecord]) {
        for p in paths {
            self.hashes.remove(*p);
            for slot in self.by_path.remove(*p).unwrap_or_default() {
                self.rows[slot] = None;
                self.free.push(slot);
            }
        }
        for c in chunks {
            let norm = c.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            let row = Row {
                chunk_id: c.chunk_id.clone(),
                doc_id: c.doc_id.clone(),
                path: c.path.clone(),
                start_line: c.start_line,
                end_line: c.end_line,
                inv_norm: if norm > 0.0 { 1.0 / norm } else { 0.0 },
            };
            let slot = match self.free.pop() {
                Some(s) => {
                    self.vectors[s * EMBEDDING_DIM..(s + 1) * EMBEDDING_DIM]
                        .copy_from_slice(&c.vector);
                    self.rows[s] = Some(row);
                    s
                }
                None => {
                    self.vectors.extend_from_slice(&c.vector);
                    self.rows.push(Some(row));
                    self.rows.len() - 1
                }
            };
            self.by_path.entry(c.path.clone()).or_default().push(slot);
            self.hashes
                .entry(c.path.clone())
                .or_insert_with(|| c.content_hash.clone());
        }
    }

    /// The content hash of the document stored at `path`.
    pub fn hash_of(&self, path: &str) -> Option<&str> {
        self.hashes.get(path).map(String::as_str)
    }

    /// The `limit` chunks most similar to `query` by cosine, best first, without text.
    pub fn search(&self, query: &[f32], limit: usize) -> Vec<Hit> {
        let qn = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        let q_inv = if qn > 0.0 { 1.0 / qn } else { 0.0 };
        let mut scored: Vec<(f32, usize)> = self
            .rows
            .iter()
            .enumerate()
            .filter_map(|(slot, row)| {
                let row = row.as_ref()?;
                let v = &self.vectors[slot * EMBEDDING_DIM..(slot + 1) * EMBEDDING_DIM];
                Some((dot(query, v) * row.inv_norm * q_inv, slot))
            })
            .collect();
        let by_score = |a: &(f32, usize), b: &(f32, usize)| {
            b.0.total_cmp(&a.0).then_with(|| {
                let id = |s: usize| self.rows[s].as_ref().map(|r| r.chunk_id.as_str());
                id(a.1).cmp(&id(b.1))
            })
        };
        if scored.len() > limit && limit > 0 {
            scored.select_nth_unstable_by(limit - 1, by_score);
            scored.truncate(limit);
        }
        scored.sort_by(by_score);
        scored.truncate(limit);
        scored
            .into_iter()
            .filter_map(|(score, slot)| {
                let r = self.rows[slot].as_ref()?;
                Some(Hit {
                    location: Default::default(),
                    chunk_id: r.chunk_id.clone(),
                    doc_id: r.doc_id.clone(),
                    path: r.path.clone(),
                    start_line: r.start_line,
                    end_line: r.end_line,
                    text: String::new(),
                    score,
                    bm25_score: None,
                    vector_score: Some(score),
                })
            })
            .collect()
    }
}

/// Dot product with eight independent sums, which the compiler turns into SIMD (a single
/// running sum must be added in order and stays scalar).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

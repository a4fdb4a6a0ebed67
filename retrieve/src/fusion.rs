//! Ranking search results: documents by their fused BM25 and vector evidence, then passages
//! within them. Fusion is a convex combination of normalised scores, or reciprocal-rank
//! fusion.

use std::collections::HashMap;

use crate::Hit;

/// The RRF constant of Cormack et al. (2009): large enough that the first few ranks of
/// either list do not dominate, the value used by every published BM25+dense RRF baseline.
pub const RRF_K: f32 = 60.0;

/// A document's score in the document-level BM25 index.
pub struct DocScore {
    /// Stable document id.
    pub doc_id: String,
    /// The document's path.
    pub path: String,
    /// Its BM25 score.
    pub score: f32,
}

/// Ranks chunks so that documents, not chunks, compete; then passages within documents.
///
/// A document scores on each side as a whole: BM25 over the whole document (`bm25_docs`,
/// from the document index) and its best chunk's cosine (max-pooling of passage evidence,
/// as in Dai & Callan's MaxP). In a hybrid the two document scores are fused with
/// `fusion`, so a document whose best BM25 passage and best vector passage are different
/// chunks still gets credit from both sides. Within a document, chunks are ordered by their
/// own chunk-level score (fused the same way in a hybrid): the best one carries the
/// document's score, and each other one that score scaled by its ratio to the best, so a
/// document's second passage follows its first and still competes with other documents'.
///
/// A document ranked without any of its chunks among the candidates gets a placeholder
/// hit with an empty `chunk_id`; the caller finds its passage.
///
/// `depth` is how many candidates each BM25 list was asked for: a shorter list holds every
/// match there is.
pub fn rank(
    bm25_chunks: Vec<Hit>,
    bm25_docs: Vec<DocScore>,
    dense: Vec<Hit>,
    mode: crate::SearchMode,
    depth: usize,
) -> Vec<Hit> {
    use crate::SearchMode;
    let as_hits = |docs: Vec<DocScore>| -> Vec<Hit> {
        docs.into_iter()
            .map(|d| Hit {
                location: Default::default(),
                chunk_id: String::new(),
                doc_id: d.doc_id,
                path: d.path,
                start_line: 0,
                end_line: 0,
                text: String::new(),
                score: d.score,
                bm25_score: Some(d.score),
                vector_score: None,
            })
            .collect()
    };
    let (chunks, docs) = match mode {
        SearchMode::Bm25 => (bm25_chunks, as_hits(bm25_docs)),
        SearchMode::Dense => {
            let docs = best_per_doc(&dense);
            (dense, docs)
        }
        SearchMode::Hybrid(f) => {
            let dense_docs = best_per_doc(&dense);
            (
                fuse(bm25_chunks, dense, f, by_chunk, depth),
                fuse(as_hits(bm25_docs), dense_docs, f, by_doc, depth),
            )
        }
    };
    let doc_score: HashMap<String, f32> =
        docs.iter().map(|d| (d.doc_id.clone(), d.score)).collect();
    // The best chunk-level score per document, to scale its other chunks by.
    let mut best: HashMap<String, f32> = HashMap::new();
    for c in &chunks {
        if !best.contains_key(&c.doc_id) {
            best.insert(c.doc_id.clone(), c.score);
        }
    }
    // Documents ranked without any chunk among the candidates keep a placeholder.
    let placeholders: Vec<Hit> = docs
        .into_iter()
        .filter(|d| !best.contains_key(&d.doc_id))
        .map(|d| Hit {
            location: Default::default(),
            chunk_id: String::new(),
            ..d
        })
        .collect();
    let mut hits: Vec<Hit> = chunks
        .into_iter()
        .filter_map(|mut c| {
            let d = *doc_score.get(&c.doc_id)?;
            let b = best[&c.doc_id];
            let ratio = if b > 0.0 {
                (c.score / b).clamp(0.0, 1.0)
            } else {
                1.0
            };
            c.score = d * ratio;
            Some(c)
        })
        .collect();
    hits.extend(placeholders);
    sort(&mut hits);
    hits
}

/// Each document's first (best) hit in a best-first list.
fn best_per_doc(list: &[Hit]) -> Vec<Hit> {
    let mut seen = std::collections::HashSet::new();
    list.iter()
        .filter(|h| seen.insert(h.doc_id.clone()))
        .cloned()
        .collect()
}

/// Fuses two rankings (best first) into one, merging hits with the same `key` (chunk id, or
/// document id for documents). `depth` is how many candidates BM25 was asked for.
fn fuse(
    bm25: Vec<Hit>,
    dense: Vec<Hit>,
    fusion: Fusion,
    key: fn(&Hit) -> &String,
    depth: usize,
) -> Vec<Hit> {
    match fusion {
        Fusion::Convex => convex(bm25, dense, key, depth),
        // Each hit scores Σ 1/(k + rank), rank 1-based.
        Fusion::Rrf => merge(bm25, dense, key, |_, rank, _| {
            1.0 / (RRF_K + rank as f32 + 1.0)
        }),
    }
}

fn by_chunk(h: &Hit) -> &String {
    &h.chunk_id
}

fn by_doc(h: &Hit) -> &String {
    &h.doc_id
}

fn sort(hits: &mut [Hit]) {
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.doc_id.cmp(&b.doc_id))
            .then_with(|| a.chunk_id.cmp(&b.chunk_id))
    });
}

/// Merges the two lists by `key`, summing what `contribution(is_bm25, rank, hit)` gives
/// each appearance, and sorts best first.
///
/// A hit found by both keeps both raw scores; one found by one side only has the other
/// side's score `None`. Ties break on chunk id so results are deterministic.
fn merge(
    bm25: Vec<Hit>,
    dense: Vec<Hit>,
    key: fn(&Hit) -> &String,
    contribution: impl Fn(bool, usize, &Hit) -> f32,
) -> Vec<Hit> {
    let mut fused: HashMap<String, Hit> = HashMap::new();
    for (list, is_bm25) in [(bm25, true), (dense, false)] {
        for (rank, hit) in list.into_iter().enumerate() {
            let add = contribution(is_bm25, rank, &hit);
            let (b, v) = (hit.bm25_score, hit.vector_score);
            let entry = fused.entry(key(&hit).clone()).or_insert_with(|| Hit {
                score: 0.0,
                bm25_score: None,
                vector_score: None,
                ..hit
            });
            entry.score += add;
            if is_bm25 {
                entry.bm25_score = b;
            } else {
                entry.vector_score = v;
            }
        }
    }
    let mut out: Vec<Hit> = fused.into_values().collect();
    sort(&mut out);
    out
}

/// How a hybrid search combines its two rankings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// Reciprocal-rank fusion with [`RRF_K`]: uses ranks only.
    Rrf,
    /// Convex combination of normalised scores with equal weights: uses how far apart
    /// scores are, which ranks throw away (Bruch et al., "An Analysis of Fusion Functions
    /// for Hybrid Retrieval", 2023, find it beats RRF across BEIR sets). Each side's scores
    /// are normalised by their distribution: mean ± [`SIGMAS`] standard deviations map to 0
    /// and 1.
    #[default]
    Convex,
}

/// Weight of the vector side in the convex combination. 0.5 is the unweighted mean: no
/// tuning to any question set.
pub const CONVEX_ALPHA: f32 = 0.5;

/// How many standard deviations either side of the mean map to 0 and 1 when a side's scores
/// are normalised: the three-sigma limits of distribution-based score fusion as Qdrant ships
/// it, not a value fitted here.
pub const SIGMAS: f32 = 3.0;

/// Convex combination: `α·dense + (1−α)·bm25` with α = [`CONVEX_ALPHA`], each side's scores
/// normalised over its candidates as `(s − (μ − 3σ)) / 6σ` (distribution-based score fusion;
/// mean μ and sample standard deviation σ of that side's scores, [`SIGMAS`] = 3). A hit
/// missing from a side gets 0 there, the score three deviations below that side's mean.
///
/// Not min-max: a range is set by its single best score, so one standout hit squeezes every
/// other candidate of that side towards 0 and hands the ordering to the other side; the
/// standard deviation is set by all the candidates. Nothing is clamped, so a standout keeps
/// its lead.
///
/// BM25 returns only documents that contain a query term. When it returns fewer than the
/// `depth` it was asked for, it has returned every match, so the documents the vector side
/// found and it did not score exactly 0; they count as zeros in its mean and deviation.
/// Without them a lone exact match (an identifier, an error code, a rare name) would sit at
/// its side's mean, and documents found by vectors alone could outrank the one document
/// that contains the word searched for. A full list was cut off, and what it left out
/// scored unknown amounts, so nothing is added to it.
fn convex(bm25: Vec<Hit>, dense: Vec<Hit>, key: fn(&Hit) -> &String, depth: usize) -> Vec<Hit> {
    let alpha = CONVEX_ALPHA;
    let unmatched = if bm25.len() < depth {
        dense.len().saturating_sub(bm25.len())
    } else {
        0
    };
    let nb = Normaliser::of(
        bm25.iter()
            .map(|h| h.bm25_score.unwrap_or(0.0))
            .chain(std::iter::repeat_n(0.0, unmatched)),
    );
    let nd = Normaliser::of(dense.iter().map(|h| h.vector_score.unwrap_or(0.0)));
    merge(bm25, dense, key, |is_bm25, _, hit| {
        if is_bm25 {
            (1.0 - alpha) * nb.apply(hit.bm25_score.unwrap_or(0.0))
        } else {
            alpha * nd.apply(hit.vector_score.unwrap_or(0.0))
        }
    })
}

/// Maps one side's scores onto 0..1 by their mean ± [`SIGMAS`] standard deviations.
struct Normaliser {
    low: f32,
    width: f32,
}

impl Normaliser {
    fn of(scores: impl Iterator<Item = f32> + Clone) -> Self {
        let n = scores.clone().count();
        let mean = scores.clone().sum::<f32>() / n.max(1) as f32;
        let var = scores.map(|s| (s - mean) * (s - mean)).sum::<f32>() / (n.max(2) - 1) as f32;
        let sd = var.sqrt();
        Normaliser {
            low: mean - SIGMAS * sd,
            width: 2.0 * SIGMAS * sd,
        }
    }

    fn apply(&self, s: f32) -> f32 {
        // One candidate, or all scoring the same: each sits at the mean.
        if self.width > 0.0 {
            (s - self.low) / self.width
        } else {
            0.5
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SearchMode;

    /// Candidates asked of each side, as in a search.
    const DEPTH: usize = crate::CANDIDATES;

    fn hit(id: &str, bm25: Option<f32>, vector: Option<f32>) -> Hit {
        Hit {
            location: Default::default(),
            chunk_id: id.into(),
            doc_id: id.into(),
            path: format!("{id}.md"),
            start_line: 1,
            end_line: 1,
            text: String::new(),
            score: 0.0,
            bm25_score: bm25,
            vector_score: vector,
        }
    }

    /// The first hits' scores, each to within 0.001 of the hand-computed value.
    fn assert_scores(hits: &[Hit], want: &[f32]) {
        assert!(hits.len() >= want.len());
        for (h, w) in hits.iter().zip(want) {
            assert!(
                (h.score - w).abs() < 1e-3,
                "{}: {} != {w}",
                h.chunk_id,
                h.score
            );
        }
    }

    #[test]
    fn rrf_adds_reciprocal_ranks_and_keeps_both_scores() {
        let bm25 = vec![hit("a", Some(9.0), None), hit("b", Some(5.0), None)];
        let dense = vec![hit("b", None, Some(0.8)), hit("c", None, Some(0.7))];
        let out = fuse(bm25, dense, Fusion::Rrf, by_chunk, DEPTH);
        let ids: Vec<&str> = out.iter().map(|h| h.chunk_id.as_str()).collect();
        // b: 1/62 + 1/61 beats a: 1/61 beats c: 1/62.
        assert_eq!(ids, ["b", "a", "c"]);
        assert!((out[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-6);
        assert_eq!(out[0].bm25_score, Some(5.0));
        assert_eq!(out[0].vector_score, Some(0.8));
        assert_eq!(out[1].vector_score, None);
        assert_eq!(out[2].bm25_score, None);
    }

    #[test]
    fn convex_uses_score_gaps() {
        // a is far ahead on BM25 and barely behind on vectors: it wins under convex,
        // while ranks alone would tie a and b.
        let bm25 = vec![
            hit("a", Some(20.0), None),
            hit("b", Some(2.0), None),
            hit("c", Some(1.0), None),
        ];
        let dense = vec![
            hit("b", None, Some(0.80)),
            hit("a", None, Some(0.79)),
            hit("c", None, Some(0.10)),
        ];
        let out = fuse(bm25, dense, Fusion::Convex, by_chunk, DEPTH);
        let ids: Vec<&str> = out.iter().map(|h| h.chunk_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // BM25: mean 7.667, sample sd 10.691, so 0..1 spans -24.41..39.74; a 0.6924,
        // b 0.4118, c 0.3962. Vectors: mean 0.5633, sd 0.4013, span -0.6406..1.7672;
        // a 0.5942, b 0.5983, c 0.3076. Each fused score is the mean of its two.
        assert_scores(&out, &[0.6433, 0.5051, 0.3519]);
        assert_eq!(out[0].bm25_score, Some(20.0));
        assert_eq!(out[0].vector_score, Some(0.79));
    }

    #[test]
    fn a_side_missing_a_hit_gives_it_three_deviations_below_its_mean() {
        // d is found by BM25 only: its vector part is 0, which is where a score three
        // standard deviations below the vectors' mean would land.
        let bm25 = vec![hit("a", Some(4.0), None), hit("d", Some(2.0), None)];
        let dense = vec![hit("a", None, Some(0.5)), hit("b", None, Some(0.3))];
        let out = fuse(bm25, dense, Fusion::Convex, by_chunk, DEPTH);
        let d = out.iter().find(|h| h.chunk_id == "d").unwrap();
        // BM25: mean 3, sd 1.414; d = (2 - (3 - 4.243)) / 8.485 = 0.3822, halved.
        assert!((d.score - 0.5 * 0.3822).abs() < 1e-3, "{}", d.score);
        assert_eq!(d.vector_score, None);
        // One candidate on a side sits at its mean.
        let out = fuse(
            vec![hit("x", Some(3.0), None)],
            Vec::new(),
            Fusion::Convex,
            by_chunk,
            DEPTH,
        );
        assert_eq!(out[0].score, 0.25);
    }

    #[test]
    fn a_lone_exact_match_outranks_documents_found_by_vectors_alone() {
        // Only x contains the searched word; twelve other documents are closer in vector
        // space. The eleven left out by BM25 count as zeros in its distribution, so x is a
        // standout there: BM25 mean 5/12 = 0.4167, sd 1.4434, so x = (5 + 3.9135) / 8.6603 =
        // 1.0292. Without the zeros x would sit at the mean (0.5) and fuse to 0.25 +
        // 0.5·0.1432 = 0.3216, below the best vector-only document's 0.5·0.7271 = 0.3635.
        let mut dense: Vec<Hit> = (0..11)
            .map(|i| hit(&format!("v{i}"), None, Some(0.60 - 0.01 * i as f32)))
            .collect();
        dense.push(hit("x", None, Some(0.45)));
        let out = fuse(
            vec![hit("x", Some(5.0), None)],
            dense.clone(),
            Fusion::Convex,
            by_chunk,
            DEPTH,
        );
        assert_eq!(out[0].chunk_id, "x", "{:?}", out[0]);
        // Vectors: mean 0.5417, sd 0.0428, 0..1 spans 0.4132..0.6701: x 0.1432.
        assert_scores(&out, &[0.5 * 1.0292 + 0.5 * 0.1432]);

        // Had BM25 been asked for one candidate, its list would have been cut off: what it
        // left out may score anything, so no zeros are added and x sits at its mean.
        let out = fuse(
            vec![hit("x", Some(5.0), None)],
            dense,
            Fusion::Convex,
            by_chunk,
            1,
        );
        let x = out.iter().find(|h| h.chunk_id == "x").unwrap();
        assert!((x.score - (0.25 + 0.5 * 0.1432)).abs() < 1e-3, "{x:?}");
        assert_eq!(out[0].chunk_id, "v0");
    }

    fn chunk(id: &str, doc: &str, bm25: Option<f32>, vector: Option<f32>) -> Hit {
        Hit {
            location: Default::default(),
            doc_id: doc.into(),
            score: bm25.or(vector).unwrap_or(0.0),
            ..hit(id, bm25, vector)
        }
    }

    fn doc(id: &str, score: f32) -> DocScore {
        DocScore {
            doc_id: id.into(),
            path: format!("{id}.md"),
            score,
        }
    }

    #[test]
    fn documents_compete_with_their_best_evidence_from_each_side() {
        // Document d's best BM25 passage (d:0) and best vector passage (d:1) differ; e has
        // one passage that is second on both sides. Per document, d is first on both sides.
        let bm25 = vec![
            chunk("d:0", "d", Some(10.0), None),
            chunk("e:0", "e", Some(8.0), None),
            chunk("f:0", "f", Some(1.0), None),
        ];
        let dense = vec![
            chunk("d:1", "d", None, Some(0.9)),
            chunk("e:0", "e", None, Some(0.8)),
            chunk("g:0", "g", None, Some(0.1)),
        ];
        let docs = vec![doc("d", 12.0), doc("e", 9.0), doc("f", 1.0), doc("h", 0.5)];
        let out = rank(bm25, docs, dense, SearchMode::Hybrid(Fusion::Convex), DEPTH);
        let ids: Vec<&str> = out.iter().map(|h| h.chunk_id.as_str()).collect();
        // Chunk by chunk, e:0 (0.5·(0.5588 + 0.5765) ≈ 0.568) would beat both halves of d
        // (0.315 and 0.307, each found by one side only); as a document, d scores
        // 0.5·(0.6843 + 0.6147) ≈ 0.650 against e's 0.587 and leads with its better passage.
        // d:1 carries the document score scaled by its ratio to d:0 (0.977), still above e.
        assert_eq!(&ids[..3], ["d:0", "d:1", "e:0"], "{ids:?}");
        assert_scores(&out, &[0.6495, 0.6345, 0.5871]);
        // h was found by the document index only: a placeholder, for the caller to fill.
        assert!(out.iter().any(|h| h.doc_id == "h" && h.chunk_id.is_empty()));
    }

    #[test]
    fn bm25_ranks_by_document_score_and_scales_other_passages() {
        let bm25 = vec![
            chunk("a:0", "a", Some(6.0), None),
            chunk("b:0", "b", Some(5.0), None),
            chunk("a:1", "a", Some(3.0), None),
        ];
        // As whole documents, b outscores a (its terms are spread over one long passage).
        let docs = vec![doc("b", 20.0), doc("a", 10.0)];
        let out = rank(bm25, docs, Vec::new(), SearchMode::Bm25, DEPTH);
        let ids: Vec<&str> = out.iter().map(|h| h.chunk_id.as_str()).collect();
        assert_eq!(ids, ["b:0", "a:0", "a:1"]);
        assert_eq!(out[0].score, 20.0);
        assert_eq!(out[2].score, 10.0 * 3.0 / 6.0);
        assert_eq!(
            out[2].bm25_score,
            Some(3.0),
            "a passage keeps its own BM25 score"
        );
    }

    #[test]
    fn rrf_of_one_list_keeps_its_order() {
        let out = fuse(
            vec![],
            vec![hit("x", None, Some(0.9)), hit("y", None, Some(0.1))],
            Fusion::Rrf,
            by_chunk,
            DEPTH,
        );
        assert_eq!(out[0].chunk_id, "x");
        assert_eq!(out[1].chunk_id, "y");
    }
}

//! Reciprocal-rank fusion of the BM25 and vector rankings.

use std::collections::HashMap;

use crate::Hit;

/// The RRF constant of Cormack et al. (2009): large enough that the first few ranks of
/// either list do not dominate, the value used by every published BM25+dense RRF baseline.
pub const RRF_K: f32 = 60.0;

/// Fuses two rankings (best first) into one: each chunk scores Σ 1/(k + rank), rank 1-based.
///
/// A hit found by both keeps both raw scores; one found by one side only has the other
/// side's score `None`. Ties break on chunk id so results are deterministic.
pub fn rrf(bm25: Vec<Hit>, dense: Vec<Hit>, k: f32) -> Vec<Hit> {
    let mut fused: HashMap<String, Hit> = HashMap::new();
    for (list, is_bm25) in [(bm25, true), (dense, false)] {
        for (rank, hit) in list.into_iter().enumerate() {
            let add = 1.0 / (k + rank as f32 + 1.0);
            let entry = fused.entry(hit.chunk_id.clone()).or_insert_with(|| Hit {
                score: 0.0,
                bm25_score: None,
                vector_score: None,
                ..hit.clone()
            });
            entry.score += add;
            if is_bm25 {
                entry.bm25_score = hit.bm25_score;
            } else {
                entry.vector_score = hit.vector_score;
            }
        }
    }
    let mut out: Vec<Hit> = fused.into_values().collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.chunk_id.cmp(&b.chunk_id))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, bm25: Option<f32>, vector: Option<f32>) -> Hit {
        Hit {
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

    #[test]
    fn rrf_adds_reciprocal_ranks_and_keeps_both_scores() {
        let bm25 = vec![hit("a", Some(9.0), None), hit("b", Some(5.0), None)];
        let dense = vec![hit("b", None, Some(0.8)), hit("c", None, Some(0.7))];
        let out = rrf(bm25, dense, 60.0);
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
    fn rrf_of_one_list_keeps_its_order() {
        let out = rrf(
            vec![],
            vec![hit("x", None, Some(0.9)), hit("y", None, Some(0.1))],
            60.0,
        );
        assert_eq!(out[0].chunk_id, "x");
        assert_eq!(out[1].chunk_id, "y");
    }
}

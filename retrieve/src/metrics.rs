//! Retrieval quality metrics, computed exactly as BEIR (and `shared/bench/beir_eval.py`) do.

use std::collections::HashMap;

/// Graded judgements of one query: document id → relevance (> 0 means relevant).
pub type Judgements = HashMap<String, u32>;

/// nDCG@10, Recall@100 and MRR@10, averaged over queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Scores {
    /// Normalised discounted cumulative gain of the top 10.
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    /// Share of relevant documents found in the top 100.
    #[serde(rename = "recall@100")]
    pub recall_at_100: f64,
    /// Reciprocal rank of the first relevant document within the top 10.
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    /// How many queries were scored.
    pub queries: usize,
}

/// Scores one ranking (best first; duplicates are ignored after their first occurrence).
pub fn score_query(ranked: &[String], relevant: &Judgements) -> Scores {
    let mut seen = std::collections::HashSet::new();
    let ranked: Vec<&String> = ranked.iter().filter(|d| seen.insert(*d)).collect();
    let gain = |d: &String| f64::from(relevant.get(d).copied().unwrap_or(0));
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, d)| gain(d) / (i as f64 + 2.0).log2())
        .sum();
    let mut ideal: Vec<u32> = relevant.values().copied().filter(|&r| r > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, &r)| f64::from(r) / (i as f64 + 2.0).log2())
        .sum();
    let n_rel = relevant.values().filter(|&&r| r > 0).count();
    let found = ranked.iter().take(100).filter(|d| gain(d) > 0.0).count();
    let mrr = ranked
        .iter()
        .take(10)
        .position(|d| gain(d) > 0.0)
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0));
    Scores {
        ndcg_at_10: if idcg > 0.0 { dcg / idcg } else { 0.0 },
        recall_at_100: if n_rel > 0 {
            found as f64 / n_rel as f64
        } else {
            0.0
        },
        mrr_at_10: mrr,
        queries: 1,
    }
}

/// Averages per-query scores over every judged query; a judged query with no run scores 0.
pub fn score_run(
    run: &HashMap<String, Vec<String>>,
    qrels: &HashMap<String, Judgements>,
) -> Scores {
    let mut total = Scores::default();
    for (qid, rel) in qrels {
        let s = score_query(run.get(qid).map_or(&[][..], Vec::as_slice), rel);
        total.ndcg_at_10 += s.ndcg_at_10;
        total.recall_at_100 += s.recall_at_100;
        total.mrr_at_10 += s.mrr_at_10;
    }
    let n = qrels.len().max(1) as f64;
    Scores {
        ndcg_at_10: total.ndcg_at_10 / n,
        recall_at_100: total.recall_at_100 / n,
        mrr_at_10: total.mrr_at_10 / n,
        queries: qrels.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hand_computed_values() {
        let rel: Judgements = [("a".to_string(), 1), ("b".to_string(), 2)].into();
        // b at rank 2, a at rank 3: DCG = 2/log2(3) + 1/log2(4); IDCG = 2/1 + 1/log2(3).
        let s = score_query(&ids(&["x", "b", "a"]), &rel);
        let dcg = 2.0 / 3f64.log2() + 0.5;
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!((s.ndcg_at_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(s.recall_at_100, 1.0);
        assert_eq!(s.mrr_at_10, 0.5);
        // Duplicates do not count twice; a miss scores zero.
        let s = score_query(&ids(&["b", "b"]), &rel);
        assert_eq!(s.recall_at_100, 0.5);
        assert_eq!(
            score_query(&ids(&["x"]), &rel),
            Scores {
                queries: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn run_average_counts_unanswered_queries_as_zero() {
        let qrels: HashMap<String, Judgements> = [
            ("q1".to_string(), [("a".to_string(), 1)].into()),
            ("q2".to_string(), [("b".to_string(), 1)].into()),
        ]
        .into();
        let run: HashMap<String, Vec<String>> = [("q1".to_string(), ids(&["a"]))].into();
        let s = score_run(&run, &qrels);
        assert_eq!(
            (s.ndcg_at_10, s.recall_at_100, s.mrr_at_10, s.queries),
            (0.5, 0.5, 0.5, 2)
        );
    }
}

//! `sovrag eval` on a small BEIR-format fixture with known answers.

use std::collections::HashMap;

use crate::util::*;

/// nDCG@10 / Recall@100 / MRR@10 recomputed here from a TREC run file, independently of
/// sovrag's own arithmetic.
fn recompute(run: &str, qrels: &HashMap<&str, HashMap<&str, f64>>) -> (f64, f64, f64) {
    let mut ranked: HashMap<&str, Vec<(u32, &str)>> = HashMap::new();
    for line in run.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        ranked
            .entry(f[0])
            .or_default()
            .push((f[3].parse().unwrap(), f[2]));
    }
    let (mut nd, mut rc, mut mrr) = (0.0, 0.0, 0.0);
    for (q, rel) in qrels {
        let mut docs = ranked.remove(q).unwrap_or_default();
        docs.sort();
        let docs: Vec<&str> = docs.into_iter().map(|(_, d)| d).collect();
        let g = |d: &str| rel.get(d).copied().unwrap_or(0.0);
        let dcg: f64 = docs
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, d)| g(d) / ((i + 2) as f64).log2())
            .sum();
        let mut ideal: Vec<f64> = rel.values().copied().filter(|&r| r > 0.0).collect();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, r)| r / ((i + 2) as f64).log2())
            .sum();
        nd += dcg / idcg;
        rc += docs.iter().take(100).filter(|d| g(d) > 0.0).count() as f64 / ideal.len() as f64;
        mrr += docs
            .iter()
            .take(10)
            .position(|d| g(d) > 0.0)
            .map_or(0.0, |i| 1.0 / (i + 1) as f64);
    }
    let n = qrels.len() as f64;
    (nd / n, rc / n, mrr / n)
}

#[test]
fn eval_scores_match_the_run_files_and_hybrid_is_at_least_the_best_single_mode() {
    let data = tempfile::tempdir().unwrap();
    let beir = repo().join("tests/fixtures/beir-mini");
    let run_out = data.path().join("run");
    let out = run_ok(
        sovrag(data.path())
            .args(["eval", "--json", "--k", "10", "--beir"])
            .arg(&beir)
            .arg("--run-out")
            .arg(&run_out),
    );
    let report = json_of(&out);
    // q5 judges d6 relevant (2) and d4 not (0): zero grades are not relevant.
    let qrels: HashMap<&str, HashMap<&str, f64>> = [
        ("q1", [("d5", 1.0)].into()),
        ("q2", [("d1", 1.0)].into()),
        ("q3", [("d8", 1.0)].into()),
        ("q4", [("d10", 1.0)].into()),
        ("q5", [("d6", 2.0)].into()),
        ("q6", [("d14", 1.0)].into()),
        ("q7", [("d17", 1.0)].into()),
        ("q8", [("d15", 1.0)].into()),
    ]
    .into();
    let mut ndcg = HashMap::new();
    for mode in ["bm25", "dense", "hybrid", "hybrid_rrf"] {
        let m = &report[mode];
        assert_eq!(m["queries"], 8, "{report}");
        let run = std::fs::read_to_string(format!("{}.{mode}", run_out.display())).unwrap();
        let (nd, rc, mrr) = recompute(&run, &qrels);
        for (key, want) in [("ndcg@10", nd), ("recall@100", rc), ("mrr@10", mrr)] {
            let got = m[key].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-6,
                "{mode} {key}: reported {got}, run file gives {want}"
            );
        }
        ndcg.insert(mode, nd);
    }
    // q2–q5 are paraphrases (hard for BM25), q6–q8 hinge on exact codes among near-identical
    // documents (hard for vectors): the hybrid must not lose to the better single mode.
    assert!(
        ndcg["hybrid"] + 1e-9 >= ndcg["bm25"].max(ndcg["dense"]),
        "{ndcg:?}"
    );
    assert!(ndcg["hybrid"] > 0.8, "{ndcg:?}");
    for stage in ["embed", "bm25", "vector", "fusion", "total"] {
        assert!(
            report["timing"]["hybrid_query"][stage]["p50_ms"].is_number(),
            "{report}"
        );
    }
    assert!(
        report["timing"]["index"]["embed_tokens_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    // A second run reuses the index.
    let again = run_ok(
        sovrag(data.path())
            .args(["eval", "--mode", "bm25", "--beir"])
            .arg(&beir),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("reusing the index"));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nDCG@10"));
}

/// The official SQuAD v2.0 scorer, beside the repository (`../shared/bench/squad2`).
fn official_scorer() -> std::path::PathBuf {
    let p = repo().join("../shared/bench/squad2/evaluate-v2.0.py");
    assert!(
        p.is_file(),
        "the official scorer is not at {} (shared/ sits beside the repository)",
        p.display()
    );
    p
}

#[test]
fn eval_qa_agrees_with_the_official_scorer() {
    let data = tempfile::tempdir().unwrap();
    let qa = repo().join("tests/fixtures/qa-mini");
    let preds = data.path().join("preds.json");
    // The smallest model: this checks the scoring and the plumbing, not the answers.
    let tiny = tiny_gguf();
    let out = run_ok(
        sovrag(data.path())
            .args(["eval", "--json", "--qa"])
            .arg(&qa)
            .arg("--predictions-out")
            .arg(&preds)
            .arg("--gguf")
            .arg(&tiny)
            .args(["--max-answer-tokens", "64", "--ctx-size", "2048"]),
    );
    let ours = json_of(&out);
    let qa_report = &ours["qa"];
    assert_eq!(qa_report["questions"], 20, "{ours}");
    for key in [
        "exact",
        "f1",
        "HasAns_exact",
        "HasAns_f1",
        "NoAns_exact",
        "gold_cited",
        "citation_precision",
        "seconds_p50",
        "seconds_p99",
        "prefill_tok_s",
        "decode_tok_s",
    ] {
        assert!(qa_report[key].is_number(), "{key} missing: {ours}");
    }
    let predictions: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&preds).unwrap()).unwrap();
    assert_eq!(predictions.as_object().map(|m| m.len()), Some(20));

    // The scorer imports numpy only to plot; a stub stands in where numpy is not installed.
    let stub = data.path().join("stub");
    std::fs::create_dir_all(&stub).unwrap();
    let has_numpy = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_numpy {
        std::fs::write(stub.join("numpy.py"), "").unwrap();
    }
    let official = std::process::Command::new("python3")
        .arg(official_scorer())
        .arg(qa.join("gold.json"))
        .arg(&preds)
        .env("PYTHONPATH", &stub)
        .output()
        .expect("run the official scorer");
    assert!(
        official.status.success(),
        "{}",
        String::from_utf8_lossy(&official.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&official.stdout).unwrap();
    for key in ["exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact"] {
        let (a, b) = (
            qa_report[key].as_f64().unwrap(),
            theirs[key].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-9, "{key}: ours {a}, official {b}");
    }
}

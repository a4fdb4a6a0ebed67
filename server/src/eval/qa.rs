//! `sovrag eval --qa DIR`: answer quality on an open-book question set, through the same
//! retrieval and generation path as `POST /v1/ask`.
//!
//! Input folder (the layout of `shared/bench/squad2`): `corpus.jsonl` (`{"_id", "title",
//! "text"}` per line: every passage retrieval searches), `questions.jsonl` (`{"id",
//! "question", "answers", "is_impossible", "doc_id"}`) and `gold.json` (SQuAD v2.0's own
//! format, which the official scorer reads). Each question gets a short answer (a phrase,
//! asked for through a JSON schema, never trimmed out of prose) or an abstention, scored
//! exactly as the official `evaluate-v2.0.py` scores it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;
use sovrag_generate::{AnswerKind, AskOptions};

use super::{latency, open_indexed, read_jsonl};
use crate::config::Config;

/// Passages given to the generator per question. Three: SQuAD paragraphs are ~150 tokens,
/// so three keep prefill near 500 tokens on a CPU, and a small model reads a short context
/// better than a long one (the retrieval depth at which the gold paragraph is almost always
/// present is reported as `gold_retrieved` to check this choice: 95.0% with three, 91.5% with
/// two, whose better phrases do not make up for it; README, "Answer quality and speed").
pub const DEFAULT_PASSAGES: usize = 3;

/// How to run the QA evaluation.
pub struct QaOptions {
    pub limit: Option<usize>,
    pub passages: usize,
    pub constrain: bool,
    pub predictions_out: Option<PathBuf>,
    pub na_prob_out: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Question {
    id: String,
    question: String,
    #[serde(default)]
    is_impossible: bool,
    #[serde(default)]
    doc_id: String,
}

/// `gold.json`: only what the scorer reads.
#[derive(Deserialize)]
struct Gold {
    data: Vec<GoldArticle>,
}
#[derive(Deserialize)]
struct GoldArticle {
    paragraphs: Vec<GoldParagraph>,
}
#[derive(Deserialize)]
struct GoldParagraph {
    qas: Vec<GoldQa>,
}
#[derive(Deserialize)]
struct GoldQa {
    id: String,
    #[serde(default)]
    answers: Vec<GoldAnswer>,
}
#[derive(Deserialize)]
struct GoldAnswer {
    text: String,
}

/// The official scorer's `normalize_answer`: lower case, ASCII punctuation removed, the
/// articles a/an/the removed as whole words, whitespace collapsed.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // Python's `\b(a|an|the)\b`: a word is a maximal run of word characters.
    let mut out = String::with_capacity(no_punc.len());
    let mut word = String::new();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punc.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn tokens(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    normalize_answer(s)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The official `compute_exact`.
pub fn exact(gold: &str, pred: &str) -> f64 {
    f64::from(u8::from(normalize_answer(gold) == normalize_answer(pred)))
}

/// The official `compute_f1`.
pub fn f1(gold: &str, pred: &str) -> f64 {
    let (g, p) = (tokens(gold), tokens(pred));
    if g.is_empty() || p.is_empty() {
        return f64::from(u8::from(g == p));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for t in &g {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0i64;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()).filter(|c| **c > 0) {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Scores in percent, as the official scorer prints them.
#[derive(Debug, Default, serde::Serialize)]
pub struct Scores {
    pub total: usize,
    pub exact: f64,
    pub f1: f64,
    #[serde(rename = "HasAns_total")]
    pub has_ans_total: usize,
    #[serde(rename = "HasAns_exact")]
    pub has_ans_exact: f64,
    #[serde(rename = "HasAns_f1")]
    pub has_ans_f1: f64,
    #[serde(rename = "NoAns_total")]
    pub no_ans_total: usize,
    #[serde(rename = "NoAns_exact")]
    pub no_ans_exact: f64,
    #[serde(rename = "NoAns_f1")]
    pub no_ans_f1: f64,
}

/// Scores `preds` against the gold answers of the questions it holds (the official scorer
/// scores every gold question; a question without a prediction counts as its empty answer).
pub fn score(gold: &HashMap<String, Vec<String>>, preds: &HashMap<String, String>) -> Scores {
    let (mut ex, mut f) = (Vec::new(), Vec::new());
    let (mut has, mut no) = (Vec::new(), Vec::new());
    let mut ids: Vec<&String> = gold.keys().collect();
    ids.sort();
    for id in ids {
        let answers: Vec<&String> = gold[id]
            .iter()
            .filter(|a| !normalize_answer(a).is_empty())
            .collect();
        let empty = String::new();
        let answers = if answers.is_empty() {
            vec![&empty]
        } else {
            answers
        };
        let pred = preds.get(id).map_or("", String::as_str);
        let e = answers.iter().map(|a| exact(a, pred)).fold(0.0, f64::max);
        let g = answers.iter().map(|a| f1(a, pred)).fold(0.0, f64::max);
        ex.push(e);
        f.push(g);
        // The split follows the raw gold list, as the official `make_qid_to_has_ans` does.
        if gold[id].is_empty() {
            no.push((e, g));
        } else {
            has.push((e, g));
        }
    }
    let pct = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            100.0 * v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let firsts = |v: &[(f64, f64)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    let seconds = |v: &[(f64, f64)]| v.iter().map(|x| x.1).collect::<Vec<_>>();
    Scores {
        total: ex.len(),
        exact: pct(&ex),
        f1: pct(&f),
        has_ans_total: has.len(),
        has_ans_exact: pct(&firsts(&has)),
        has_ans_f1: pct(&seconds(&has)),
        no_ans_total: no.len(),
        no_ans_exact: pct(&firsts(&no)),
        no_ans_f1: pct(&seconds(&no)),
    }
}

fn read_gold(path: &Path) -> Result<HashMap<String, Vec<String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let gold: Gold =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(gold
        .data
        .into_iter()
        .flat_map(|a| a.paragraphs)
        .flat_map(|p| p.qas)
        .map(|q| (q.id, q.answers.into_iter().map(|a| a.text).collect()))
        .collect())
}

/// The first `limit / 2` answerable and `limit - limit / 2` unanswerable questions, in file
/// order (all of them without a limit).
fn balanced(questions: Vec<Question>, limit: Option<usize>) -> Vec<Question> {
    let Some(limit) = limit else {
        return questions;
    };
    let (mut has, mut no) = (limit / 2, limit - limit / 2);
    questions
        .into_iter()
        .filter(|q| {
            let slot = if q.is_impossible { &mut no } else { &mut has };
            let take = *slot > 0;
            *slot = slot.saturating_sub(1);
            take
        })
        .collect()
}

pub async fn run(mut config: Config, dir: &Path, opts: QaOptions, json: bool) -> Result<()> {
    anyhow::ensure!(
        (1..=20).contains(&opts.passages),
        "--passages must be between 1 and 20"
    );
    let gold = read_gold(&dir.join("gold.json"))?;
    let questions: Vec<Question> = read_jsonl(&dir.join("questions.jsonl"))?;
    let questions = balanced(questions, opts.limit);
    anyhow::ensure!(!questions.is_empty(), "no questions to ask");
    for q in &questions {
        anyhow::ensure!(
            gold.contains_key(&q.id),
            "question {} is not in gold.json",
            q.id
        );
    }
    let verify = config.verify;
    let installation = config.data_dir.clone();
    let (engine, _info) = open_indexed(&mut config, dir).await?;
    let generator = engine.generator().await?;
    let model = config
        .gguf
        .clone()
        .map_or_else(|| "default".to_owned(), |p| p.display().to_string());

    let mut preds: HashMap<String, String> = HashMap::new();
    let mut na_probs: HashMap<String, f32> = HashMap::new();
    let (mut times, mut first_tokens, mut verify_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut prefill_tok, mut prefill_s, mut decode_tok, mut decode_s, mut grammar_s) =
        (0usize, 0f64, 0usize, 0f64, 0f64);
    let (mut answered_has, mut gold_cited, mut gold_retrieved, mut has_total) = (0, 0, 0, 0);
    let (mut citations, mut citations_with_answer) = (0usize, 0usize);
    let mut abstained = 0usize;
    for (i, q) in questions.iter().enumerate() {
        // Which paragraphs the answer was made from (the same search `ask` runs), a
        // diagnostic outside the timed answer.
        let retrieved: HashSet<String> = engine
            .query(&q.question, opts.passages)
            .await?
            .into_iter()
            .map(|h| h.path)
            .collect();
        let started = Instant::now();
        let a = engine
            .ask(
                &q.question,
                opts.passages,
                None,
                AskOptions {
                    kind: AnswerKind::Short,
                    verify,
                    constrain: opts.constrain,
                    ..AskOptions::default()
                },
                |_| {},
            )
            .await?;
        times.push(started.elapsed());
        first_tokens.push(Duration::from_secs_f64(a.timings.first_token_seconds));
        if let Some(v) = &a.verification {
            verify_times.push(Duration::from_secs_f64(v.seconds));
        }
        prefill_tok += a.timings.prompt_tokens_evaluated;
        prefill_s += a.timings.prefill_seconds;
        decode_tok += a.generated_tokens;
        decode_s += a.timings.decode_seconds;
        grammar_s += a.timings.grammar_seconds;
        let pred = if a.abstained {
            String::new()
        } else {
            a.answer.clone()
        };
        abstained += usize::from(a.abstained);
        let answers = &gold[&q.id];
        if !q.is_impossible {
            has_total += 1;
            gold_retrieved += usize::from(retrieved.contains(&q.doc_id));
            if !a.abstained {
                answered_has += 1;
                gold_cited += usize::from(a.citations.iter().any(|c| c.path == q.doc_id));
                for c in &a.citations {
                    citations += 1;
                    let passage = normalize_answer(&c.text);
                    citations_with_answer += usize::from(answers.iter().any(|g| {
                        let g = normalize_answer(g);
                        !g.is_empty() && passage.contains(&g)
                    }));
                }
            }
        }
        let dropped = a.verification.as_ref().map_or(String::new(), |v| {
            if v.dropped.is_empty() {
                String::new()
            } else {
                format!(" (verification dropped {:?})", v.dropped)
            }
        });
        eprintln!(
            "eval: {}/{} {:.1}s {} p(null) {:.3} -> {:?}{dropped}",
            i + 1,
            questions.len(),
            started.elapsed().as_secs_f64(),
            q.id,
            a.null_probability.unwrap_or(0.0),
            pred
        );
        preds.insert(q.id.clone(), pred);
        na_probs.insert(q.id.clone(), a.null_probability.unwrap_or(0.0));
    }

    if let Some(out) = &opts.predictions_out {
        std::fs::write(out, serde_json::to_vec_pretty(&preds)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(out) = &opts.na_prob_out {
        std::fs::write(out, serde_json::to_vec_pretty(&na_probs)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    let asked: HashMap<String, Vec<String>> = questions
        .iter()
        .map(|q| (q.id.clone(), gold[&q.id].clone()))
        .collect();
    let s = score(&asked, &preds);
    let share = |a: usize, b: usize| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    let t = latency(times);
    let ft = latency(first_tokens);
    let vt = latency(verify_times);
    let report = serde_json::json!({
        "qa": {
            "questions": questions.len(),
            "exact": s.exact,
            "f1": s.f1,
            "HasAns_exact": s.has_ans_exact,
            "HasAns_f1": s.has_ans_f1,
            "NoAns_exact": s.no_ans_exact,
            "gold_cited": share(gold_cited, answered_has),
            "citation_precision": share(citations_with_answer, citations),
            "seconds_p50": t.p50_ms / 1000.0,
            "seconds_p99": t.p99_ms / 1000.0,
            "prefill_tok_s": prefill_tok as f64 / prefill_s.max(1e-9),
            "decode_tok_s": decode_tok as f64 / decode_s.max(1e-9),
            "first_token_seconds_p50": ft.p50_ms / 1000.0,
            "verify_seconds_p50": vt.p50_ms / 1000.0,
            "grammar_share_of_decode": grammar_s / decode_s.max(1e-9),
            "gold_retrieved": share(gold_retrieved, has_total),
            "abstained": share(abstained, questions.len()),
            "passages": opts.passages,
            "verify": verify,
            "abstain_threshold": config.abstain_threshold,
            "focus_words": config.focus_words,
            "grammar": opts.constrain,
            "model": model,
            "chat_template": generator.uses_chat_template(),
            "scores": s,
        }
    });
    // The installation's own answer-quality figure, for `report`'s local-performance factor.
    let bench = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let kept = crate::report::EvalResult {
        bench,
        questions: questions.len(),
        f1: s.f1,
        exact: s.exact,
        model: engine.default_model(),
        day: crate::usage::today(),
    };
    if let Err(e) = crate::report::save_eval(&installation, &kept) {
        tracing::warn!("keeping the eval result for `report`: {e:#}");
    }
    if json {
        println!("{report}");
        return Ok(());
    }
    let r = &report["qa"];
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "{} questions ({} answerable), model {model}, {} passages, verify {}, grammar {}",
        questions.len(),
        has_total,
        opts.passages,
        if verify { "on" } else { "off" },
        if opts.constrain { "on" } else { "off" }
    );
    println!(
        "exact {:.1}  f1 {:.1}  HasAns exact {:.1} f1 {:.1}  NoAns exact {:.1}",
        f("exact"),
        f("f1"),
        f("HasAns_exact"),
        f("HasAns_f1"),
        f("NoAns_exact")
    );
    println!(
        "gold paragraph cited {:.1}% of answered answerable; citations holding the answer {:.1}%; gold retrieved {:.1}%; abstained {:.1}%",
        f("gold_cited"),
        f("citation_precision"),
        f("gold_retrieved"),
        f("abstained")
    );
    println!(
        "seconds per answer p50 {:.2} / p99 {:.2}; first token p50 {:.2}; verification p50 {:.2}; prefill {:.0} tok/s, decode {:.1} tok/s (grammar {:.1}% of decode)",
        f("seconds_p50"),
        f("seconds_p99"),
        f("first_token_seconds_p50"),
        f("verify_seconds_p50"),
        f("prefill_tok_s"),
        f("decode_tok_s"),
        100.0 * f("grammar_share_of_decode")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_the_official_scorer() {
        assert_eq!(normalize_answer("The  Norman-French!"), "normanfrench");
        assert_eq!(normalize_answer("a cat and an apple"), "cat and apple");
        assert_eq!(normalize_answer("Theatre"), "theatre");
        assert_eq!(normalize_answer(""), "");
    }

    #[test]
    fn f1_and_exact_follow_the_official_definitions() {
        assert_eq!(exact("Edgar Atheling", "edgar atheling."), 1.0);
        assert!((f1("Edgar Atheling", "Edgar") - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(f1("", ""), 1.0);
        assert_eq!(f1("", "Edgar"), 0.0);
        assert_eq!(f1("Edgar", ""), 0.0);
    }

    #[test]
    fn scores_split_answerable_and_not() {
        let gold: HashMap<String, Vec<String>> = [
            (
                "a".to_owned(),
                vec!["Edgar".to_owned(), "Edgar Atheling".to_owned()],
            ),
            ("b".to_owned(), vec![]),
        ]
        .into_iter()
        .collect();
        let preds: HashMap<String, String> = [
            ("a".to_owned(), "Edgar".to_owned()),
            ("b".to_owned(), "x".to_owned()),
        ]
        .into_iter()
        .collect();
        let s = score(&gold, &preds);
        assert_eq!(s.exact, 50.0);
        assert_eq!(s.has_ans_exact, 100.0);
        assert_eq!(s.no_ans_exact, 0.0);
    }

    #[test]
    fn balanced_limit_takes_half_of_each() {
        let q = |id: &str, imp: bool| Question {
            id: id.into(),
            question: String::new(),
            is_impossible: imp,
            doc_id: String::new(),
        };
        let got = balanced(
            vec![
                q("1", false),
                q("2", false),
                q("3", true),
                q("4", false),
                q("5", true),
            ],
            Some(4),
        );
        let ids: Vec<&str> = got.iter().map(|q| q.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "3", "5"]);
    }
}

//! Grammars that constrain decoding, and sampling under them cheaply.
//!
//! An answer either is the fixed abstention or is sentences that each end with one or more
//! markers `[n]`, `1 ≤ n ≤` the passages in the prompt; a structured answer is JSON that
//! matches a JSON Schema (llama.cpp's own converter turns the schema into a grammar).
//!
//! Checking a grammar against every token of a 150k vocabulary on every step is slow, so
//! [`pick`] samples first and asks the grammar about that one token; only a rejected token
//! costs a pass over the whole vocabulary (what llama.cpp's common sampler does).

use std::time::{Duration, Instant};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;

use crate::{Error, Result, Sampling};

/// What an answer says when the passages do not hold the answer.
pub const ABSTENTION: &str = "I could not find this in the indexed documents.";

/// Longest answer, in sentences: a grammar bound, so that a looping model still ends.
const MAX_SENTENCES: usize = 12;

/// Most markers after one sentence: a bound, so that a model repeating `[3][3]` moves on.
const MAX_MARKERS: usize = 3;

/// The GBNF grammar of a cited answer over `n_passages` passages.
///
/// A sentence is text without brackets or line breaks, then its markers and its full stop,
/// in either order (`Tea steeps two minutes [2].` or `Tea steeps two minutes. [2]`): small
/// models end a sentence with a full stop first, and the grammar then allows nothing but a
/// marker. A full stop inside a sentence must be followed by a letter or digit
/// (`config.toml`, `1.5`), so that a sentence cannot end without its marker.
pub(crate) fn citation_grammar(n_passages: usize) -> String {
    let numbers: Vec<String> = (1..=n_passages.max(1))
        .map(|n| format!("\"{n}\""))
        .collect();
    format!(
        r#"root ::= answer | "{ABSTENTION}"
answer ::= sentence (sep sentence){{0,{more}}}
sep ::= " " | "\n"
sentence ::= start body (cites "." | "." " "? cites)
start ::= [^ \n\[\].]
body ::= ([^\n\[\].] | "." [a-zA-Z0-9])*
cites ::= " "? cite{{1,{markers}}}
cite ::= "[" num "]"
num ::= {numbers}
"#,
        more = MAX_SENTENCES - 1,
        markers = MAX_MARKERS,
        numbers = numbers.join(" | ")
    )
}

/// The grammar of a short answer's JSON after its first key (`{"answer":`, which the prompt
/// ends with): a phrase of up to 120 characters, then one to three in-range citations. The
/// other branch, `null`, is decided from the model's probabilities before decoding starts.
pub(crate) fn short_phrase_grammar(n_passages: usize) -> String {
    let numbers: Vec<String> = (1..=n_passages.max(1))
        .map(|n| format!("\"{n}\""))
        .collect();
    format!(
        r#"root ::= " \"" char{{1,120}} "\", \"citations\": [" num (", " num){{0,{more}}} "]}}"
char ::= [^"\\\x00-\x1f] | "\\" ["\\/bfnrt]
num ::= {numbers}
"#,
        more = MAX_MARKERS - 1,
        numbers = numbers.join(" | ")
    )
}

/// The grammar for JSON matching `schema` (JSON Schema text).
///
/// # Errors
///
/// [`Error::Schema`] naming the problem: not JSON, or not something llama.cpp's converter
/// handles.
pub fn schema_grammar(schema: &str) -> Result<String> {
    let value: serde_json::Value = serde_json::from_str(schema)
        .map_err(|e| Error::Schema(format!("the schema is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::Schema(
            "the schema must be a JSON object (a JSON Schema)".into(),
        ));
    }
    llama_cpp_2::json_schema_to_grammar(schema).map_err(|e| {
        Error::Schema(format!(
            "llama.cpp's JSON-Schema-to-grammar converter cannot handle this schema ({e}); \
             it supports type, properties, required, items, enum, const, anyOf/oneOf, \
             $ref to $defs, string formats and min/max bounds"
        ))
    })
}

/// A grammar sampler for `grammar`, with the time its checks take.
pub(crate) struct Constraint {
    sampler: LlamaSampler,
    /// Time spent asking the grammar (checks and accepts).
    pub(crate) spent: Duration,
    /// Steps on which the sampled token was rejected and the whole vocabulary was checked.
    pub(crate) full_checks: usize,
}

impl Constraint {
    pub(crate) fn new(model: &LlamaModel, grammar: &str) -> Result<Self> {
        let sampler = LlamaSampler::grammar(model, grammar, "root")
            .map_err(|e| Error::Schema(format!("llama.cpp rejected the grammar: {e}")))?;
        Ok(Self {
            sampler,
            spent: Duration::ZERO,
            full_checks: 0,
        })
    }

    /// Records `token` as generated.
    pub(crate) fn accept(&mut self, token: LlamaToken) {
        let t = Instant::now();
        self.sampler.accept(token);
        self.spent += t.elapsed();
    }
}

/// The greedy choice at output `idx`, under `constraint` when there is one.
pub(crate) fn pick(
    ctx: &LlamaContext<'_>,
    idx: i32,
    constraint: Option<&mut Constraint>,
    sampler: Option<&mut Sampler>,
) -> LlamaToken {
    let logits = ctx.get_logits_ith(idx);
    let (best, mut sampler) = match sampler {
        Some(s) => (s.draw(&top_k(logits.iter().copied().enumerate())), Some(s)),
        None => (argmax(logits), None),
    };
    let Some(c) = constraint else {
        return best;
    };
    let t = Instant::now();
    // Ask about the sampled token alone: almost always the grammar allows it.
    let logit = logits[usize::try_from(best.0).unwrap_or(0)];
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(best, logit, 0.0)], false);
    c.sampler.apply(&mut one);
    let token = if one.data[0].logit().is_finite() {
        best
    } else {
        c.full_checks += 1;
        let mut all = ctx.token_data_array_ith(idx);
        c.sampler.apply(&mut all);
        let allowed = all
            .data
            .iter()
            .filter(|d| d.logit().is_finite())
            .map(|d| (usize::try_from(d.id().0).unwrap_or(0), d.logit()));
        match sampler.as_mut() {
            Some(s) => s.draw(&top_k(allowed)),
            None => allowed
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(best, |(i, _)| LlamaToken(i32::try_from(i).unwrap_or(0))),
        }
    };
    c.spent += t.elapsed();
    token
}

/// Tokens a sampled answer draws from: the most likely this many.
const TOP_K: usize = 40;

/// The [`TOP_K`] highest `(token, logit)` pairs, best first, in one pass without sorting
/// the vocabulary.
fn top_k(items: impl Iterator<Item = (usize, f32)>) -> Vec<(usize, f32)> {
    let mut top: Vec<(usize, f32)> = Vec::with_capacity(TOP_K + 1);
    for (i, l) in items {
        if top.len() == TOP_K && l <= top[TOP_K - 1].1 {
            continue;
        }
        let at = top.partition_point(|&(_, x)| x >= l);
        top.insert(at, (i, l));
        top.truncate(TOP_K);
    }
    top
}

/// Draws tokens for a sampled answer ([`Sampling`]), with its own seeded generator.
pub(crate) struct Sampler {
    cfg: Sampling,
    state: u64,
}

impl Sampler {
    pub(crate) fn new(cfg: Sampling) -> Self {
        Self {
            cfg,
            state: cfg.seed,
        }
    }

    /// SplitMix64: small, fast and good enough to pick among 40 tokens.
    fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One token from `top` (best first): softmax at the temperature, cut at `top_p`.
    fn draw(&mut self, top: &[(usize, f32)]) -> LlamaToken {
        let Some(&(first, max)) = top.first() else {
            return LlamaToken(0);
        };
        let t = f64::from(self.cfg.temperature.max(1e-3));
        let weights: Vec<f64> = top
            .iter()
            .map(|&(_, l)| ((f64::from(l) - f64::from(max)) / t).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let (mut kept, mut mass) = (0, 0.0);
        for w in &weights {
            kept += 1;
            mass += w / total;
            if mass >= f64::from(self.cfg.top_p) {
                break;
            }
        }
        let kept_total: f64 = weights[..kept].iter().sum();
        let mut u = self.next_unit() * kept_total;
        for (i, w) in weights[..kept].iter().enumerate() {
            if u < *w {
                return LlamaToken(i32::try_from(top[i].0).unwrap_or(0));
            }
            u -= w;
        }
        LlamaToken(i32::try_from(first).unwrap_or(0))
    }
}

fn argmax(logits: &[f32]) -> LlamaToken {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    LlamaToken(i32::try_from(best).unwrap_or(0))
}

/// Whether `text` is a whole answer under [`citation_grammar`] for `n_passages`: the
/// abstention, or sentences each ending in one to three in-range markers and a full stop.
/// (A hand-written parser of the same language, so tests can check what decoding produced.)
pub fn is_cited_answer(text: &str, n_passages: usize) -> bool {
    if text == ABSTENTION {
        return true;
    }
    let b = text.as_bytes();
    let mut i = 0;
    let mut sentences = 0;
    loop {
        match sentence(b, i, n_passages) {
            Some(end) => i = end,
            None => return false,
        }
        sentences += 1;
        if sentences > MAX_SENTENCES {
            return false;
        }
        if i == b.len() {
            return true;
        }
        if !matches!(b[i], b' ' | b'\n') {
            return false;
        }
        i += 1;
    }
}

/// Parses one sentence at `i`; returns where it ends.
fn sentence(b: &[u8], mut i: usize, n: usize) -> Option<usize> {
    if b.get(i)
        .is_none_or(|c| matches!(c, b' ' | b'\n' | b'[' | b']' | b'.'))
    {
        return None;
    }
    i += 1;
    // The body: stops at a line break, a bracket, or a full stop not followed by an ASCII
    // letter or digit.
    while let Some(&c) = b.get(i) {
        match c {
            b'\n' | b'[' | b']' => break,
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) => i += 2,
            b'.' => break,
            _ => i += 1,
        }
    }
    match b.get(i) {
        Some(b'[') => {
            let end = cites(b, i, n)?;
            (b.get(end) == Some(&b'.')).then_some(end + 1)
        }
        Some(b'.') => {
            i += 1;
            if b.get(i) == Some(&b' ') {
                i += 1;
            }
            cites(b, i, n)
        }
        _ => None,
    }
}

/// Parses one to [`MAX_MARKERS`] markers `[n]`, `1 ≤ n ≤ n_passages`, at `i`.
fn cites(b: &[u8], mut i: usize, n_passages: usize) -> Option<usize> {
    let mut count = 0;
    while count < MAX_MARKERS && b.get(i) == Some(&b'[') {
        let start = i + 1;
        let mut j = start;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == start || b.get(j) != Some(&b']') || b[start] == b'0' {
            return None;
        }
        let k: usize = std::str::from_utf8(&b[start..j]).ok()?.parse().ok()?;
        if k == 0 || k > n_passages {
            return None;
        }
        i = j + 1;
        count += 1;
    }
    (count > 0).then_some(i)
}

/// The longest prefix of `text` that is a whole cited answer: what is kept when the token
/// cap cut the last sentence off. Empty when not even one sentence was finished.
pub(crate) fn complete_prefix(text: &str, n_passages: usize) -> &str {
    if is_cited_answer(text, n_passages) {
        return text;
    }
    // A sentence ends right after a marker, or after the full stop that follows one.
    text.char_indices()
        .filter(|&(_, c)| c == ']' || c == '.')
        .map(|(i, _)| i + 1)
        .rev()
        .find(|&end| is_cited_answer(&text[..end], n_passages))
        .map_or("", |end| &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cited_answers_are_recognised() {
        assert!(is_cited_answer("Tea steeps two minutes [2].", 3));
        assert!(is_cited_answer("Tea steeps two minutes. [2]", 3));
        assert!(is_cited_answer(
            "Tea steeps two minutes.[2] Then pour [1].",
            3
        ));
        assert!(!is_cited_answer("Tea steeps [1][2][3][1].", 3));
        assert!(is_cited_answer("Tea steeps two minutes[2][3].", 3));
        assert!(is_cited_answer(
            "Set config.toml to 1.5 [1]. Then restart [3].",
            3
        ));
        assert!(is_cited_answer(ABSTENTION, 3));
        assert!(!is_cited_answer("Tea steeps two minutes.", 3));
        assert!(!is_cited_answer("Tea steeps two minutes [4].", 3));
        assert!(!is_cited_answer("Tea steeps two minutes [0].", 3));
        assert!(!is_cited_answer("Tea [1] steeps.", 3));
        assert!(!is_cited_answer("Tea steeps. Long [1].", 3));
        assert!(!is_cited_answer("", 3));
    }

    #[test]
    fn cut_answers_keep_their_finished_sentences() {
        assert_eq!(
            complete_prefix("Tea steeps two minutes [2]. Use water at 80", 3),
            "Tea steeps two minutes [2]."
        );
        assert_eq!(complete_prefix("Tea steeps two", 3), "");
        assert_eq!(
            complete_prefix("Tea steeps. [2] Water at 80 degrees", 3),
            "Tea steeps. [2]"
        );
    }

    #[test]
    fn grammar_names_every_passage_and_only_those() {
        let g = citation_grammar(3);
        assert!(g.contains(r#"num ::= "1" | "2" | "3""#), "{g}");
        assert!(g.contains("cite{1,3}"), "{g}");
        assert!(g.contains(ABSTENTION));
    }

    #[test]
    fn schema_errors_name_the_problem() {
        let e = schema_grammar("{not json").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = schema_grammar("[1, 2]").unwrap_err().to_string();
        assert!(e.contains("JSON object"), "{e}");
    }
}

#[cfg(test)]
mod sampling_tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let logits = [0.5f32, 3.0, -1.0, 2.0, 3.0];
        let top = top_k(logits.iter().copied().enumerate());
        assert_eq!(top.len(), 5);
        assert_eq!(top[0].1, 3.0);
        assert_eq!(top[2], (3, 2.0));
        let many: Vec<f32> = (0..1000).map(|i| (i % 97) as f32).collect();
        let top = top_k(many.iter().copied().enumerate());
        assert_eq!(top.len(), TOP_K);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(top[0].1, 96.0);
    }

    #[test]
    fn draws_follow_temperature_top_p_and_seed() {
        let top = [(7usize, 2.0f32), (8, 1.0), (9, 0.0)];
        let cfg = |temperature, top_p, seed| Sampling {
            temperature,
            top_p,
            seed,
        };
        // A tiny temperature is greedy; a small top_p keeps only the best.
        let mut cold = Sampler::new(cfg(0.01, 1.0, 1));
        let mut narrow = Sampler::new(cfg(1.0, 0.1, 1));
        for _ in 0..50 {
            assert_eq!(cold.draw(&top).0, 7);
            assert_eq!(narrow.draw(&top).0, 7);
        }
        // At temperature 1 every token comes up, in proportion to its probability.
        let mut warm = Sampler::new(cfg(1.0, 1.0, 42));
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[usize::try_from(warm.draw(&top).0).unwrap() - 7] += 1;
        }
        assert!(
            seen[0] > seen[1] && seen[1] > seen[2] && seen[2] > 100,
            "{seen:?}"
        );
        // The same seed draws the same tokens.
        let mut a = Sampler::new(cfg(1.0, 1.0, 5));
        let mut b = Sampler::new(cfg(1.0, 1.0, 5));
        let da: Vec<i32> = (0..20).map(|_| a.draw(&top).0).collect();
        let db: Vec<i32> = (0..20).map(|_| b.draw(&top).0).collect();
        assert_eq!(da, db);
    }
}

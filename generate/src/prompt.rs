//! The prompts, and packing passages into the context window.
//!
//! A model with a chat template (every instruct GGUF) is prompted as a chat: a fixed system
//! message (`prompts/system-*.txt`), then the numbered passages and the question as the
//! user's turn. The system message comes first and never changes, so its KV cache is
//! reused from one question to the next. A GGUF without a template (a base model) gets a
//! document to continue instead (`prompts/answer.txt`).
//!
//! Passages go in rank order while they fit beside the answer; a passage is never cut in
//! the middle except the first, and only when it alone is too big, because an answer from
//! half of the best passage beats no answer at all.

use crate::{Error, Passage, Result};

/// The completion prompt. `{passages}` and `{question}` are filled in once each.
const ANSWER_TEMPLATE: &str = include_str!("../prompts/answer.txt");

/// System message for a prose answer with citations.
pub(crate) const SYSTEM_PROSE: &str = include_str!("../prompts/system-prose.txt");
/// System message for a short answer (a phrase) as JSON: `{"answer", "citations"}`.
pub(crate) const SYSTEM_SHORT: &str = include_str!("../prompts/system-short.txt");
/// Worked short answers, two with a phrase and two where the question changes a detail and
/// the answer is null, given as earlier turns of the chat. They come before the question, so
/// their KV cache is kept from one question to the next and costs nothing after the first.
const SHORT_EXAMPLES: &str = include_str!("../prompts/short-examples.json");
/// What a short answer's JSON starts with. The prompt ends with it, so the model's first
/// choice is the one that matters, a phrase (`"`) or `null`, and its probabilities can be
/// read off directly.
pub(crate) const SHORT_PREFIX: &str = "{\"answer\":";
const SHORT_INSTRUCTION: &str = "Reply with JSON: {\"answer\": the shortest phrase copied word for word from a passage that answers the question, \"citations\": the numbers of the passages it comes from}. If no passage states the answer to this exact question, the answer is null.";
/// System message for rewriting a follow-up as a standalone question.
pub(crate) const SYSTEM_REWRITE: &str = include_str!("../prompts/system-rewrite.txt");

/// The user's turn of a rewrite: the conversation so far, then the message to rewrite.
pub(crate) fn rewrite_turn(history: &[(String, String)], last: &str) -> String {
    let mut s = String::from("Conversation:\n");
    for (role, text) in history {
        let who = if role == "assistant" {
            "Assistant"
        } else {
            "User"
        };
        s.push_str(&format!("{who}: {}\n", text.trim()));
    }
    s.push_str(&format!("\nLast message: {}", last.trim()));
    s
}

/// System message for an answer as JSON matching the caller's schema.
pub(crate) const SYSTEM_SCHEMA: &str = include_str!("../prompts/system-schema.txt");

/// The user's turn of a chat prompt.
pub(crate) fn user_turn(passages: &str, question: &str) -> String {
    format!("Passages:\n\n{passages}\nQuestion: {}", question.trim())
}

/// The user's turn of a short-answer chat: the instruction comes after the passages, where a
/// small model reads it last.
pub(crate) fn short_user_turn(passages: &str, question: &str) -> String {
    format!(
        "Passages:\n\n{passages}Question: {}\n\n{SHORT_INSTRUCTION}",
        question.trim()
    )
}

/// A short answer's JSON as the examples write it, and as its grammar requires.
pub(crate) fn short_json(answer: Option<&str>, citations: &[u32]) -> String {
    let answer = answer.map_or_else(
        || "null".to_owned(),
        |a| serde_json::Value::from(a).to_string(),
    );
    let citations: Vec<String> = citations.iter().map(u32::to_string).collect();
    format!(
        "{{\"answer\": {answer}, \"citations\": [{}]}}",
        citations.join(", ")
    )
}

#[derive(serde::Deserialize)]
struct Example {
    passages: Vec<String>,
    question: String,
    answer: Option<String>,
    citations: Vec<u32>,
}

/// The worked examples as (user turn, assistant turn) pairs.
pub(crate) fn short_examples() -> Vec<(String, String)> {
    // Compiled in and parsed by a unit test: a parse failure is a build defect.
    let examples: Vec<Example> = serde_json::from_str(SHORT_EXAMPLES)
        .unwrap_or_else(|e| unreachable!("prompts/short-examples.json: {e}"));
    examples
        .iter()
        .map(|e| {
            let blocks: String = e
                .passages
                .iter()
                .enumerate()
                .map(|(i, t)| format!("[{}]\n{t}\n\n", i + 1))
                .collect();
            (
                short_user_turn(&blocks, &e.question),
                short_json(e.answer.as_deref(), &e.citations),
            )
        })
        .collect()
}

/// System message for a verification question.
pub(crate) const SYSTEM_CHECK: &str = include_str!("../prompts/system-check.txt");

/// The verification question: the cited passages alone, and the claim. Asked in a fresh
/// chat, not after the answer: a small model asked about its own answer says the same
/// thing whatever the passage holds, while on the passage alone it tells them apart.
pub(crate) fn check_turn(passages: &[&str], claim: &str) -> String {
    let label = if passages.len() > 1 {
        "Passages"
    } else {
        "Passage"
    };
    let text = passages.join("\n\n");
    format!(
        "{label}:\n{text}\n\nStatement: {}\n\nIs the statement supported by the passage? Answer yes or no.",
        claim.trim()
    )
}

/// A prompt template split around its two placeholders.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    head: String,
    middle: String,
    tail: String,
}

impl Template {
    /// The built-in answer template.
    pub(crate) fn answer() -> Self {
        // The template is compiled in and checked by a unit test, so a parse
        // failure here is a build defect, not a runtime condition.
        Self::parse(ANSWER_TEMPLATE).unwrap_or_else(|| {
            unreachable!("prompts/answer.txt must contain {{passages}} then {{question}}")
        })
    }

    /// Splits `text` at `{passages}` and then `{question}`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (head, rest) = text.split_once("{passages}")?;
        let (middle, tail) = rest.split_once("{question}")?;
        Some(Self {
            head: head.to_owned(),
            middle: middle.to_owned(),
            tail: tail.trim_end_matches('\n').to_owned(),
        })
    }

    /// Fills the template. Substituted text is never scanned for
    /// placeholders, so passages that contain `{question}` stay as they are.
    pub(crate) fn render(&self, passages: &str, question: &str) -> String {
        let mut out = String::with_capacity(
            self.head.len() + passages.len() + self.middle.len() + question.len() + self.tail.len(),
        );
        out.push_str(&self.head);
        out.push_str(passages);
        out.push_str(&self.middle);
        out.push_str(question.trim());
        // The tail ends in "Answer:" with no newline: the model continues the line.
        out.push_str(&self.tail);
        out
    }
}

/// How passage `n` appears in the prompt.
pub(crate) fn passage_block(n: usize, p: &Passage) -> String {
    format!(
        "[{n}] ({}:{}-{})\n{}\n\n",
        p.path,
        p.start_line,
        p.end_line,
        p.text.trim_end()
    )
}

/// How passage `n` appears in a short-answer prompt: number and text only. Asked for a
/// phrase, a small model copied a path header ("Computational_complexity theory") as the
/// answer; citations are resolved by number, so the model does not need the path.
pub(crate) fn bare_block(n: usize, p: &Passage) -> String {
    format!("[{n}]\n{}\n\n", p.text.trim())
}

/// Words that say nothing about what a question is after.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "from", "and", "or", "is",
    "are", "was", "were", "be", "been", "what", "which", "who", "whom", "whose", "when", "where",
    "why", "how", "did", "do", "does", "that", "this", "these", "those", "it", "its", "as", "into",
    "than", "then", "there", "their", "his", "her", "they", "he", "she", "i", "you", "we", "can",
    "could", "should", "would", "my", "your", "our", "if", "not", "no",
];

/// A word as the focus compares it: lowercased, and cut to five characters, a crude stem
/// ("founded" and "founding" meet at "found").
fn stems(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| w.chars().take(5).collect())
}

/// The sentences of `text` that bear on `question`, in their order, up to about `words`
/// words; skipped stretches are marked `…`. Reading a prompt is most of an answer's time on
/// a CPU, and a passage is retrieved for one or two sentences of it: on SQuAD 2.0's
/// paragraphs (111 words at the median), the sentences that share the question's rarer
/// words, kept up to 60 words, hold the answer for 98% of the answerable questions (45
/// words: 96%) and cut the passage by a third. `words == 0`, a passage of at most `words`
/// words, or one that holds code, is left whole.
pub(crate) fn focus(text: &str, question: &str, words: usize) -> String {
    let total = text.split_whitespace().count();
    if words == 0 || total <= words || text.contains("```") {
        return text.to_string();
    }
    // Units: sentences within lines; a unit remembers its line so the text keeps its lines.
    let mut units: Vec<(usize, &str)> = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        let mut rest = line.trim();
        while !rest.is_empty() {
            let cut = sentence_end(rest).unwrap_or(rest.len());
            let (head, tail) = rest.split_at(cut);
            units.push((line_no, head.trim()));
            rest = tail.trim_start();
        }
    }
    let asked: std::collections::HashSet<String> = stems(question).collect();
    let unit_stems: Vec<std::collections::HashSet<String>> =
        units.iter().map(|(_, u)| stems(u).collect()).collect();
    // Rarer words weigh more: a word in every sentence picks out none of them.
    let score = |i: usize| -> f32 {
        unit_stems[i]
            .intersection(&asked)
            .map(|w| 1.0 / unit_stems.iter().filter(|s| s.contains(w)).count() as f32)
            .sum()
    };
    let scores: Vec<f32> = (0..units.len()).map(score).collect();
    let mut order: Vec<usize> = (0..units.len()).filter(|&i| scores[i] > 0.0).collect();
    if order.is_empty() {
        // Nothing in common with the question: the opening, as packing would cut it.
        order = (0..units.len()).collect();
    } else {
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    }
    let mut keep = vec![false; units.len()];
    let mut kept = 0;
    for i in order {
        if kept >= words {
            break;
        }
        keep[i] = true;
        kept += units[i].1.split_whitespace().count();
    }
    let mut out = String::new();
    let mut last: Option<(usize, usize)> = None;
    for (i, (line, unit)) in units.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        match last {
            None if i > 0 => out.push_str("… "),
            Some((j, _)) if j + 1 < i => out.push_str(" … "),
            Some((_, l)) if l != *line => out.push('\n'),
            Some(_) => out.push(' '),
            None => {}
        }
        out.push_str(unit);
        last = Some((i, *line));
    }
    if last.is_some_and(|(i, _)| i + 1 < units.len()) {
        out.push_str(" …");
    }
    out
}

/// `p` with its text focused on `question` (see [`focus`]).
pub(crate) fn focused(p: &Passage, question: &str, words: usize) -> Passage {
    Passage {
        text: focus(&p.text, question, words),
        ..p.clone()
    }
}

/// Where the first sentence of `s` ends (after its `.`, `?` or `!` and closing quotes or
/// brackets), if another sentence follows: the next word starts with a capital, a digit or
/// an opening quote or bracket.
fn sentence_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if matches!(b[i], b'.' | b'?' | b'!') {
            let mut end = i + 1;
            while end < b.len() && matches!(b[end], b'"' | b'\'' | b')' | b']') {
                end += 1;
            }
            if end < b.len() && b[end] == b' ' {
                let next = s[end..].trim_start().chars().next();
                if next
                    .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit() || "\"'([".contains(c))
                {
                    return Some(end);
                }
            }
        }
        i += 1;
    }
    None
}

/// A prompt with the passages that made it in.
#[derive(Debug)]
pub(crate) struct Packed {
    pub(crate) prompt: String,
    /// The passages in the prompt, numbered from 1; the first may be cut.
    pub(crate) passages: Vec<Passage>,
    pub(crate) left_out: usize,
}

/// Builds the prompt (`render(passage blocks, question)`) with as many leading passages as
/// fit in `budget` tokens, as counted by `count`.
#[cfg(test)]
pub(crate) fn pack(
    render: &dyn Fn(&str, &str) -> String,
    question: &str,
    passages: &[Passage],
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Result<Packed> {
    pack_with(&passage_block, render, question, passages, budget, count)
}

/// [`pack`], with each passage written by `block`.
pub(crate) fn pack_with(
    block: &dyn Fn(usize, &Passage) -> String,
    render: &dyn Fn(&str, &str) -> String,
    question: &str,
    passages: &[Passage],
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Result<Packed> {
    if passages.is_empty() {
        return Err(Error::NoPassages);
    }
    let fixed = count(&render("", question));
    if fixed >= budget {
        return Err(Error::PromptTooLong {
            needed: fixed,
            budget,
        });
    }
    let mut room = budget - fixed;
    let mut used: Vec<Passage> = Vec::new();
    for p in passages {
        let cost = count(&block(used.len() + 1, p));
        if cost <= room {
            room -= cost;
            used.push(p.clone());
        } else if used.is_empty() {
            used.push(
                cut_to_fit(p, room, count, block).ok_or_else(|| Error::PromptTooLong {
                    needed: fixed + count(&block(1, &empty_like(p))),
                    budget,
                })?,
            );
            break;
        } else {
            break;
        }
    }

    // Token counts of the parts do not add up exactly to the count of the
    // whole (merges across the joins), so check the real prompt.
    loop {
        let prompt = render(&blocks(block, &used), question);
        let total = count(&prompt);
        if total <= budget {
            let left_out = passages.len() - used.len();
            return Ok(Packed {
                prompt,
                passages: used,
                left_out,
            });
        }
        if used.len() > 1 {
            used.pop();
            continue;
        }
        let first = &used[0];
        let target = count(&block(1, first)).saturating_sub(total - budget);
        let cut = cut_to_fit(first, target, count, block).ok_or(Error::PromptTooLong {
            needed: total,
            budget,
        })?;
        if cut.text.len() >= first.text.len() {
            return Err(Error::PromptTooLong {
                needed: total,
                budget,
            });
        }
        used[0] = cut;
    }
}

pub(crate) fn blocks(block: &dyn Fn(usize, &Passage) -> String, passages: &[Passage]) -> String {
    passages
        .iter()
        .enumerate()
        .map(|(i, p)| block(i + 1, p))
        .collect()
}

fn empty_like(p: &Passage) -> Passage {
    Passage {
        text: String::new(),
        ..p.clone()
    }
}

/// The longest head of `p` whose block costs at most `room` tokens: whole
/// lines if at least one fits, else whole words of the first line. `None` if
/// not even a word fits.
fn cut_to_fit(
    p: &Passage,
    room: usize,
    count: &dyn Fn(&str) -> usize,
    block: &dyn Fn(usize, &Passage) -> String,
) -> Option<Passage> {
    let lines: Vec<&str> = p.text.split_inclusive('\n').collect();
    let with_lines = |k: usize| Passage {
        text: lines[..k].concat(),
        end_line: p
            .start_line
            .saturating_add(u32::try_from(k.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(p.end_line.max(p.start_line)),
        ..p.clone()
    };
    let fits = |q: &Passage| count(&block(1, q)) <= room;
    let k = largest_fitting(lines.len(), |k| fits(&with_lines(k)));
    let cut = if k > 0 {
        with_lines(k)
    } else {
        // One enormous first line (minified code, a table): cut between words.
        let first = lines.first().copied().unwrap_or_default();
        let breaks: Vec<usize> = first
            .char_indices()
            .filter(|(_, c)| c.is_whitespace())
            .map(|(i, _)| i)
            .collect();
        let with_words = |k: usize| Passage {
            text: first[..breaks[k - 1]].to_owned(),
            end_line: p.start_line,
            ..p.clone()
        };
        let k = largest_fitting(breaks.len(), |k| fits(&with_words(k)));
        if k == 0 || with_words(k).text.trim().is_empty() {
            return None;
        }
        with_words(k)
    };
    tracing::warn!(
        path = %p.path,
        kept_bytes = cut.text.len(),
        total_bytes = p.text.len(),
        end_line = cut.end_line,
        "the top passage alone does not fit the context window; cut it"
    );
    Some(cut)
}

/// The largest `k` in `0..=n` with `fits(k)`, assuming `fits` is monotone
/// and `fits(0)` holds.
fn largest_fitting(n: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per whitespace-separated word: close enough to a tokenizer
    /// for testing the packing arithmetic.
    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn passage(n: u32, text: &str) -> Passage {
        Passage {
            path: format!("p{n}.md"),
            start_line: 10,
            end_line: 10 + u32::try_from(text.lines().count()).unwrap() - 1,
            text: text.to_owned(),
            ..Default::default()
        }
    }

    fn template() -> Template {
        Template::parse("Use these.\n{passages}\nQuestion: {question}\nAnswer:\n").unwrap()
    }

    fn render(p: &str, q: &str) -> String {
        template().render(p, q)
    }

    #[test]
    fn focus_keeps_the_sentences_that_share_the_question_words() {
        let text = "The Normans were a people of France. They gave their name to Normandy. \
                    Rollo swore fealty to King Charles III of West Francia. \
                    Their culture was distinct. Their language was French. \
                    Many of them settled in Italy later on and fought there.";
        let f = focus(text, "To whom did Rollo swear fealty?", 8);
        assert_eq!(
            f,
            "… Rollo swore fealty to King Charles III of West Francia. …"
        );
        // Whole when short enough, when off, and for code.
        assert_eq!(focus(text, "Rollo", 1000), text);
        assert_eq!(focus(text, "Rollo", 0), text);
        let code = format!("{text}\n```sh\nsovrag serve\n```");
        assert_eq!(focus(&code, "Rollo", 8), code);
        // Nothing in common: the opening.
        assert!(focus(text, "xylophone", 8).starts_with("The Normans were a people of France."));
        // Lines stay lines; a gap between kept sentences is marked.
        let lines =
            "Alpha beta gamma.\nDelta epsilon owl.\nZeta eta theta.\nIota kappa owl lambda.";
        assert_eq!(
            focus(lines, "owl", 6),
            "… Delta epsilon owl. … Iota kappa owl lambda."
        );
    }

    #[test]
    fn sentences_end_before_a_capital_or_digit() {
        assert_eq!(sentence_end("It is 3.5 m. Then"), Some(12));
        assert_eq!(sentence_end("e.g. this one"), None);
        assert_eq!(sentence_end("He said \"no.\" (Later"), Some(13));
    }

    #[test]
    fn built_in_template_parses() {
        let t = Template::answer();
        let p = t.render("[1] (a:1-1)\nx\n", "Why?");
        assert!(p.contains("[1] (a:1-1)\nx\n"));
        assert!(p.contains("Why?"));
        assert!(p.ends_with("Answer:"));
    }

    #[test]
    fn render_does_not_substitute_inside_passages() {
        let p = template().render("{question}\n", "Q?");
        assert_eq!(p, "Use these.\n{question}\n\nQuestion: Q?\nAnswer:");
    }

    #[test]
    fn chat_prompts_are_filled_in() {
        let u = user_turn("[1] (a:1-1)\nx\n\n", " Why? ");
        assert!(u.starts_with("Passages:\n\n[1] (a:1-1)\nx\n\n"), "{u}");
        assert!(u.ends_with("Question: Why?"), "{u}");
        let c = check_turn(&["Tea steeps.", "Water boils."], "Tea steeps. ");
        assert!(
            c.starts_with("Passages:\nTea steeps.\n\nWater boils.\n\nStatement: Tea steeps.\n"),
            "{c}"
        );
        let examples = short_examples();
        assert_eq!(examples.len(), 4);
        assert!(
            examples[0]
                .0
                .starts_with("Passages:\n\n[1]\nThe Harbour Bridge")
        );
        assert_eq!(
            examples[0].1,
            r#"{"answer": "Jørn Utzon", "citations": [2]}"#
        );
        assert_eq!(examples[1].1, r#"{"answer": null, "citations": []}"#);
        assert!(examples[1].1.starts_with(SHORT_PREFIX));
        for s in [SYSTEM_PROSE, SYSTEM_SHORT, SYSTEM_SCHEMA, SYSTEM_CHECK] {
            assert!(!s.trim().is_empty());
        }
        assert!(SYSTEM_PROSE.contains(crate::grammar::ABSTENTION));
    }

    #[test]
    fn all_fit() {
        let ps = [passage(1, "a b c"), passage(2, "d e")];
        let packed = pack(&render, "q", &ps, 100, &words).unwrap();
        assert_eq!(packed.passages.len(), 2);
        assert_eq!(packed.left_out, 0);
        assert!(
            packed
                .prompt
                .contains("[1] (p1.md:10-10)\na b c\n\n[2] (p2.md:10-10)\nd e\n\n")
        );
    }

    #[test]
    fn passages_that_do_not_fit_are_left_out_whole() {
        // Fixed part: "Use these. Question: q Answer:" = 5 words.
        // Each block: "[n] (pN.md:10-10)" = 2 words + its text.
        let ps = [
            passage(1, "a b c"),
            passage(2, "d e f g h i j"),
            passage(3, "k"),
        ];
        let packed = pack(&render, "q", &ps, 5 + 5 + 4, &words).unwrap();
        assert_eq!(packed.passages, vec![ps[0].clone()]);
        assert_eq!(packed.left_out, 2);
        assert!(!packed.prompt.contains("d e"));
    }

    #[test]
    fn oversized_first_passage_is_cut_at_a_line() {
        let ps = [passage(1, "a b\nc d\ne f\ng h\n"), passage(2, "x")];
        let packed = pack(&render, "q", &ps, 5 + 2 + 4, &words).unwrap();
        assert_eq!(packed.passages.len(), 1);
        assert_eq!(packed.passages[0].text, "a b\nc d\n");
        assert_eq!(packed.passages[0].start_line, 10);
        assert_eq!(packed.passages[0].end_line, 11);
        assert_eq!(packed.left_out, 1);
    }

    #[test]
    fn oversized_single_line_is_cut_between_words() {
        let ps = [passage(1, "a b c d e f g h")];
        let packed = pack(&render, "q", &ps, 5 + 2 + 3, &words).unwrap();
        assert_eq!(packed.passages[0].text, "a b c");
        assert_eq!(packed.passages[0].end_line, 10);
        assert_eq!(packed.left_out, 0);
    }

    #[test]
    fn question_too_long_is_an_error() {
        let ps = [passage(1, "a")];
        let err = pack(&render, "q r s t u v", &ps, 8, &words).unwrap_err();
        assert!(matches!(err, Error::PromptTooLong { .. }), "{err}");
    }

    #[test]
    fn no_passages_is_an_error() {
        let err = pack(&render, "q", &[], 100, &words).unwrap_err();
        assert!(matches!(err, Error::NoPassages));
    }

    #[test]
    fn largest_fitting_finds_the_edge() {
        assert_eq!(largest_fitting(10, |k| k <= 7), 7);
        assert_eq!(largest_fitting(10, |k| k == 0), 0);
        assert_eq!(largest_fitting(10, |_| true), 10);
        assert_eq!(largest_fitting(0, |_| true), 0);
    }
}

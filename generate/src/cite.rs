//! Checking an answer's citations against the passages that were in the prompt.
//!
//! A small model invents passage numbers and often forgets markers
//! altogether. Markers that name no passage are removed (a citation the user
//! cannot follow is worse than none), and a sentence without a marker is
//! cited only where one passage contains most of its content words. Nothing
//! here trusts the model: every citation that comes out points at a passage
//! that exists, and every added one is backed by lexical overlap.

use std::collections::HashSet;

use crate::{Citation, Passage};

/// Share of a sentence's content words a passage must contain to support it.
const MIN_SUPPORT: f64 = 0.5;

/// Words too common to say where a sentence came from.
const STOPWORDS: &[&str] = &[
    "about", "after", "all", "also", "and", "answer", "any", "are", "because", "been", "before",
    "being", "both", "but", "can", "could", "did", "does", "each", "for", "from", "had", "has",
    "have", "her", "here", "his", "how", "into", "its", "just", "may", "more", "most", "not",
    "now", "only", "other", "our", "out", "over", "passage", "passages", "question", "she",
    "should", "some", "such", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "too", "very", "was", "were", "what", "when", "where", "which",
    "while", "who", "will", "with", "would", "yes", "you", "your",
];

/// Small words a short answer may leave out of, or add to, what it copies: "Mongolian,
/// Tibetan, Chinese" copies "Mongolian, Tibetan, and Chinese".
const LOOSE_WORDS: &[&str] = &["a", "an", "and", "the"];
/// At most this many of them may differ between a phrase and what it copies.
const MAX_LOOSE: usize = 2;

/// Where a short answer's words were copied from: the span of a passage's own text that
/// holds `phrase`'s words, in order, with case, punctuation and spacing aside and at most
/// [`MAX_LOOSE`] of [`LOOSE_WORDS`] left out or added, and the passages that hold it (those
/// of `cited` that do, or where none does, every passage that does, so the answer cites
/// where its words are). `None` when no passage holds it: the phrase was not copied.
///
/// The answer then quotes the passage, not the model: a copy that lost a word of the list or
/// a percent sign reads as the passage has it, and a changed word ("TEU" for "TFEU") is
/// not a copy.
pub(crate) fn copied(
    passages: &[Passage],
    phrase: &str,
    cited: &[u32],
) -> Option<(String, Vec<u32>)> {
    let want: Vec<String> = words(phrase).collect();
    if want.is_empty() {
        return None;
    }
    // Passage `k` (numbered from 1) and its copy of the phrase, where it holds one.
    let spans: Vec<(u32, &str)> = (1..)
        .zip(passages)
        .filter_map(|(k, p)| Some((k, copied_span(&p.text, &want)?)))
        .collect();
    let of_cited: Vec<(u32, &str)> = spans
        .iter()
        .copied()
        .filter(|(k, _)| cited.contains(k))
        .collect();
    let holding = if of_cited.is_empty() { spans } else { of_cited };
    let text = holding.first()?.1.to_owned();
    Some((text, holding.into_iter().map(|(k, _)| k).collect()))
}

/// The words of `text` (runs of letters and digits), lowercase, with their byte ranges.
fn word_spans(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, String)> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| {
            // `w` is a slice of `text`: its offset is where it starts.
            let start = w.as_ptr() as usize - text.as_ptr() as usize;
            (start..start + w.len(), w.to_lowercase())
        })
}

/// The first span of `text` whose words are `want` (lowercase) as [`copied`] allows, from
/// its first word to its last, with the marks that cling to either end ("$5", "61%", "C++").
fn copied_span<'t>(text: &'t str, want: &[String]) -> Option<&'t str> {
    let have: Vec<(std::ops::Range<usize>, String)> = word_spans(text).collect();
    let loose = |w: &str| LOOSE_WORDS.contains(&w);
    // A phrase may start with a small word the passage does not have ("the Mongols").
    let lead = want.iter().take_while(|w| loose(w)).count().min(MAX_LOOSE);
    // From the phrase's first word, then (where it leads with small words) from after them.
    for from in std::iter::once(0).chain((lead > 0).then_some(lead)) {
        let Some(first) = want.get(from) else {
            continue;
        };
        for start in (0..have.len()).filter(|&s| have[s].1 == *first) {
            let (mut i, mut j, mut skipped, mut last) = (start, from, from, start);
            while j < want.len() && skipped <= MAX_LOOSE {
                if i < have.len() && have[i].1 == want[j] {
                    (last, i, j) = (i, i + 1, j + 1);
                } else if loose(&want[j]) {
                    (j, skipped) = (j + 1, skipped + 1);
                } else if i < have.len() && loose(&have[i].1) {
                    (i, skipped) = (i + 1, skipped + 1);
                } else {
                    break;
                }
            }
            if j == want.len() && skipped <= MAX_LOOSE {
                return Some(&text[clinging(text, have[start].0.start, have[last].0.end)]);
            }
        }
    }
    None
}

/// `start..end` widened over the marks that belong to the words at either end ("$5",
/// "61%", "C++"), and over a bracket or quotation mark that closes one opened inside it
/// ("Council (GPhC)", `services "for remuneration"`).
fn clinging(text: &str, start: usize, end: usize) -> std::ops::Range<usize> {
    let clings = |c: &char| "%$€£¥+#°".contains(*c);
    let before: usize = text[..start]
        .chars()
        .rev()
        .take_while(clings)
        .map(char::len_utf8)
        .sum();
    let after: usize = text[end..]
        .chars()
        .take_while(clings)
        .map(char::len_utf8)
        .sum();
    let (start, mut end) = (start - before, end + after);
    for (open, close) in [('(', ')'), ('[', ']'), ('“', '”'), ('"', '"')] {
        let inside = &text[start..end];
        let opened = if open == close {
            inside.matches(open).count() % 2 == 1
        } else {
            inside.matches(open).count() > inside.matches(close).count()
        };
        if opened && text[end..].starts_with(close) {
            end += close.len_utf8();
        }
    }
    start..end
}

/// Resolves the `[n]` markers of `answer` against `passages`, the passages
/// that were in the prompt (`[n]` is `passages[n - 1]`).
///
/// Returns the answer with out-of-range markers removed and supported
/// uncited sentences cited, the citations in order of first appearance
/// (once per passage), and the out-of-range numbers that were dropped (once
/// each, in order of appearance).
pub(crate) fn resolve_citations(
    answer: &str,
    passages: &[Passage],
) -> (String, Vec<Citation>, Vec<u32>) {
    let (text, dropped) = drop_invalid_markers(answer, passages.len());
    let text = cite_supported_sentences(&text, passages);
    let mut seen = HashSet::new();
    let citations = markers(&text)
        .into_iter()
        .flat_map(|m| m.numbers)
        .filter(|&n| seen.insert(n))
        .filter_map(|n| citation(passages, n, false))
        .collect();
    (text, citations, dropped)
}

/// The citation `[n]` of `passages` (numbered from 1), if there is such a passage.
pub(crate) fn citation(passages: &[Passage], n: u32, verified: bool) -> Option<Citation> {
    let p = passages.get(usize::try_from(n).ok()?.checked_sub(1)?)?;
    Some(Citation {
        n,
        path: p.path.clone(),
        doc_id: p.doc_id.clone(),
        start_line: p.start_line,
        end_line: p.end_line,
        text: p.text.clone(),
        page: p.page,
        section: p.section.clone(),
        verified,
    })
}

/// A citation marker: `[1]`, `[1, 2]`, `[1,2]`; `[1][2]` is two markers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) numbers: Vec<u32>,
}

/// Parses a marker starting at byte `start` of `text` (which must be `[`).
fn parse_marker(text: &str, start: usize) -> Option<Marker> {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    let mut numbers = Vec::new();
    loop {
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        let digits_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        // More than nine digits is not a passage number (and would not fit).
        if i == digits_start || i - digits_start > 9 {
            return None;
        }
        numbers.push(text[digits_start..i].parse().ok()?);
        while bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b']') => {
                return Some(Marker {
                    start,
                    end: i + 1,
                    numbers,
                });
            }
            _ => return None,
        }
    }
}

pub(crate) fn markers(text: &str) -> Vec<Marker> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = text[i..].find('[') {
        let start = i + off;
        match parse_marker(text, start) {
            Some(m) => {
                i = m.end;
                out.push(m);
            }
            None => i = start + 1,
        }
    }
    out
}

/// Lexical support at or above which a claim is taken as supported without asking the
/// model: its passage holds nearly every content word, so it is a copy or near-copy (a small
/// model asked about a verbatim copy can still say no).
pub(crate) const LEXICAL_SUPPORTED: f64 = 0.8;

/// A sentence's claim (its words without the markers: what is judged is the words, not the
/// numbers) and the passage numbers it cites that name one of `n_passages`.
pub(crate) fn claim(sentence: &str, n_passages: usize) -> (String, Vec<u32>) {
    let ms = markers(sentence);
    let numbers = ms
        .iter()
        .flat_map(|m| m.numbers.iter().copied())
        .filter(|&k| is_valid(k, n_passages))
        .collect();
    let mut claim = sentence.to_owned();
    for m in ms.iter().rev() {
        claim.replace_range(m.start..m.end, "");
    }
    let claim = claim.split_whitespace().collect::<Vec<_>>().join(" ");
    (claim.replace(" .", "."), numbers)
}

/// Whether the passages `sentence` cites hold nearly all its words (the lexical test's
/// "supported"); false for a sentence that cites nothing.
pub(crate) fn lexically_supported(sentence: &str, passages: &[Passage]) -> bool {
    let (claim, numbers) = claim(sentence, passages.len());
    let texts: Vec<&str> = numbers
        .iter()
        .filter_map(|&k| passages.get(k as usize - 1))
        .map(|p| p.text.trim())
        .collect();
    !texts.is_empty() && lexical_support(&claim, &texts).is_some_and(|x| x >= LEXICAL_SUPPORTED)
}

/// `sentence` with its markers replaced by one marker `[n]`, where the first one was.
pub(crate) fn recited(sentence: &str, n: u32) -> String {
    let ms = markers(sentence);
    let Some(first) = ms.first() else {
        return sentence.to_owned();
    };
    let mut out = sentence[..first.start].to_owned();
    out.push_str(&format!("[{n}]"));
    let mut last = first.end;
    for m in &ms[1..] {
        out.push_str(sentence[last..m.start].trim_end());
        last = m.end;
    }
    out.push_str(&sentence[last..]);
    out
}

fn is_valid(n: u32, n_passages: usize) -> bool {
    n >= 1 && usize::try_from(n).is_ok_and(|n| n <= n_passages)
}

/// Removes out-of-range numbers from markers, and markers left empty.
fn drop_invalid_markers(answer: &str, n_passages: usize) -> (String, Vec<u32>) {
    let mut out = String::with_capacity(answer.len());
    let mut dropped: Vec<u32> = Vec::new();
    let mut last = 0;
    let mut skip_space = false;
    for m in markers(answer) {
        let before = &answer[last..m.start];
        out.push_str(if skip_space {
            before.strip_prefix(' ').unwrap_or(before)
        } else {
            before
        });
        skip_space = false;
        let mut valid: Vec<u32> = Vec::new();
        for &n in &m.numbers {
            if is_valid(n, n_passages) {
                if !valid.contains(&n) {
                    valid.push(n);
                }
            } else {
                tracing::info!(
                    marker = n,
                    n_passages,
                    "dropping citation of a passage not in the prompt"
                );
                if !dropped.contains(&n) {
                    dropped.push(n);
                }
            }
        }
        if valid.is_empty() {
            // Take one space with the marker so "word [9]." becomes "word.".
            if out.ends_with(' ') {
                out.pop();
            } else {
                skip_space = true;
            }
        } else if valid == m.numbers {
            out.push_str(&answer[m.start..m.end]);
        } else {
            let list: Vec<String> = valid.iter().map(u32::to_string).collect();
            out.push('[');
            out.push_str(&list.join(", "));
            out.push(']');
        }
        last = m.end;
    }
    let rest = &answer[last..];
    out.push_str(if skip_space {
        rest.strip_prefix(' ').unwrap_or(rest)
    } else {
        rest
    });
    (out, dropped)
}

/// Byte ranges of the sentences of `text`. A sentence ends at a newline or
/// after `.`, `!` or `?` followed by whitespace; markers right after the end
/// ("Foo. [1]") belong to the sentence before them.
pub(crate) fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let ends = c == b'\n'
            || (matches!(c, b'.' | b'!' | b'?')
                && bytes.get(i + 1).is_none_or(u8::is_ascii_whitespace));
        if !ends {
            i += 1;
            continue;
        }
        let mut end = if c == b'\n' { i } else { i + 1 };
        if c != b'\n' {
            // Swallow trailing markers: " [1]" or " [1][2]".
            let mut j = end;
            loop {
                let k = j + text[j..].len() - text[j..].trim_start_matches(' ').len();
                match (bytes.get(k) == Some(&b'['))
                    .then(|| parse_marker(text, k))
                    .flatten()
                {
                    Some(m) => {
                        j = m.end;
                        end = m.end;
                    }
                    None => break,
                }
            }
        }
        out.push((start, end));
        start = end;
        i = end.max(i + 1);
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
    out.retain(|&(s, e)| !text[s..e].trim().is_empty());
    out
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    word_spans(text).map(|(_, w)| w)
}

fn content_words(sentence: &str) -> HashSet<String> {
    words(sentence)
        .filter(|w| w.chars().count() >= 3 && !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Whether `have` holds `word` or a plural/singular form of it, so that
/// "watches" finds "watch" and "folder" finds "folders" without a stemmer.
fn contains_form(have: &HashSet<String>, word: &str) -> bool {
    have.contains(word)
        || ["s", "es"].iter().any(|suffix| {
            word.strip_suffix(suffix).is_some_and(|w| have.contains(w))
                || have.contains(&format!("{word}{suffix}"))
        })
}

/// Share of `claim`'s content words that `passages` hold (`None` for a claim with no
/// content word): the lexical test verification runs before asking the model.
pub(crate) fn lexical_support(claim: &str, passages: &[&str]) -> Option<f64> {
    let wanted = content_words(claim);
    if wanted.is_empty() {
        return None;
    }
    let have: HashSet<String> = passages.iter().flat_map(|p| words(p)).collect();
    let hits = wanted.iter().filter(|w| contains_form(&have, w)).count();
    #[allow(clippy::cast_precision_loss)]
    Some(hits as f64 / wanted.len() as f64)
}

/// The passage (index) that best supports `sentence`, if it reaches the bar.
fn best_support(sentence: &str, passage_words: &[HashSet<String>]) -> Option<usize> {
    let wanted = content_words(sentence);
    if wanted.is_empty() {
        return None;
    }
    let mut best: Option<(usize, usize)> = None;
    for (i, have) in passage_words.iter().enumerate() {
        let hits = wanted.iter().filter(|w| contains_form(have, w)).count();
        if best.is_none_or(|(_, b)| hits > b) {
            best = Some((i, hits));
        }
    }
    let (i, hits) = best?;
    #[allow(clippy::cast_precision_loss)]
    let share = hits as f64 / wanted.len() as f64;
    (share >= MIN_SUPPORT).then_some(i)
}

/// Appends ` [n]` to each sentence without a valid marker that passage `n`
/// supports.
fn cite_supported_sentences(text: &str, passages: &[Passage]) -> String {
    let passage_words: Vec<HashSet<String>> =
        passages.iter().map(|p| words(&p.text).collect()).collect();
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for (start, end) in sentences(text) {
        let sentence = &text[start..end];
        let cited = markers(sentence)
            .iter()
            .any(|m| m.numbers.iter().any(|&n| is_valid(n, passages.len())));
        if cited {
            continue;
        }
        let Some(i) = best_support(sentence, &passage_words) else {
            continue;
        };
        // Before the closing punctuation: "It runs [1]." reads as one claim.
        let body = sentence.trim_end();
        let at = start
            + body
                .strip_suffix(['.', '!', '?', ':', ';'])
                .map_or(body.len(), str::len);
        inserts.push((at, format!(" [{}]", i + 1)));
    }
    let mut out = text.to_owned();
    for (at, marker) in inserts.into_iter().rev() {
        out.insert_str(at, &marker);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(path: &str, text: &str) -> Passage {
        Passage {
            path: path.to_owned(),
            start_line: 1,
            end_line: 3,
            text: text.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn a_short_answer_quotes_the_passage_it_copied() {
        let ps = vec![
            passage(
                "a.md",
                "The Yuan used Mongolian, Tibetan, and Chinese scripts.",
            ),
            passage(
                "b.md",
                "About 61% of voters (the TFEU article 294 procedure) cost $5 in C++.",
            ),
            passage(
                "c.md",
                "Mongolian, Tibetan, and Chinese were spoken at court.",
            ),
        ];
        let quote = |phrase: &str, cited: &[u32]| copied(&ps, phrase, cited);
        // A list that lost its "and" reads as the passage has it, cited where it is.
        assert_eq!(
            quote("Mongolian, Tibetan, Chinese", &[1]),
            Some(("Mongolian, Tibetan, and Chinese".to_owned(), vec![1]))
        );
        // Uncited, or cited elsewhere: every passage that holds it.
        assert_eq!(
            quote("mongolian tibetan chinese", &[2]).map(|c| c.1),
            Some(vec![1, 3])
        );
        // Marks that belong to a word come with it; case and quotes do not matter.
        assert_eq!(quote("61", &[2]).map(|c| c.0), Some("61%".to_owned()));
        assert_eq!(quote("$5", &[]).map(|c| c.0), Some("$5".to_owned()));
        assert_eq!(quote("c++", &[2]).map(|c| c.0), Some("C++".to_owned()));
        assert_eq!(
            quote("\"the TFEU article 294\"", &[2]).map(|c| c.0),
            Some("the TFEU article 294".to_owned())
        );
        // A bracket or quotation mark opened inside the copy is closed as the passage has it.
        let ps2 = vec![passage(
            "c.md",
            "The General Pharmaceutical Council (GPhC) registers people who give services \"for remuneration\".",
        )];
        assert_eq!(
            copied(&ps2, "General Pharmaceutical Council (GPhC", &[1]).map(|c| c.0),
            Some("General Pharmaceutical Council (GPhC)".to_owned())
        );
        assert_eq!(
            copied(&ps2, "people who give services for remuneration", &[1]).map(|c| c.0),
            Some("people who give services \"for remuneration\"".to_owned())
        );
        // A small word added to the front is no obstacle.
        assert_eq!(
            quote("the Mongolian", &[1]).map(|c| c.0),
            Some("Mongolian".to_owned())
        );
        // A changed word, a word split off another, or words out of order are no copy.
        assert_eq!(quote("TEU article 294", &[2]), None);
        assert_eq!(quote("Mongol", &[1]), None);
        assert_eq!(quote("Chinese, Tibetan", &[1]), None);
        // Nor are more small words than a copy loses, or no words at all.
        assert_eq!(quote("the Yuan and the Mongolian", &[1]), None);
        assert_eq!(quote("%", &[2]), None);
    }

    fn passages() -> Vec<Passage> {
        vec![
            passage(
                "docs/install.md",
                "Install sovrag with cargo install sovrag. It needs Rust 1.94.",
            ),
            passage(
                "docs/watch.md",
                "To watch another folder, run `sovrag serve --watch DIR`. Changes are re-indexed.",
            ),
        ]
    }

    #[test]
    fn valid_marker_is_kept() {
        let (text, cites, dropped) =
            resolve_citations("Run sovrag serve --watch DIR [2].", &passages());
        assert_eq!(text, "Run sovrag serve --watch DIR [2].");
        assert_eq!(cites.len(), 1);
        assert_eq!(cites[0].n, 2);
        assert_eq!(cites[0].path, "docs/watch.md");
        assert!(dropped.is_empty());
    }

    #[test]
    fn out_of_range_marker_is_dropped_and_reported() {
        let (text, cites, dropped) = resolve_citations("Bananas are yellow [7].", &passages());
        assert_eq!(text, "Bananas are yellow.");
        assert!(cites.is_empty());
        assert_eq!(dropped, vec![7]);
    }

    #[test]
    fn zero_is_out_of_range() {
        let (text, _, dropped) = resolve_citations("[0] Bananas.", &passages());
        assert_eq!(text, "Bananas.");
        assert_eq!(dropped, vec![0]);
    }

    #[test]
    fn list_marker_is_resolved() {
        let (text, cites, dropped) = resolve_citations("Both say so [1, 2].", &passages());
        assert_eq!(text, "Both say so [1, 2].");
        assert_eq!(cites.iter().map(|c| c.n).collect::<Vec<_>>(), vec![1, 2]);
        assert!(dropped.is_empty());
    }

    #[test]
    fn list_marker_loses_only_its_invalid_numbers() {
        let (text, cites, dropped) = resolve_citations("Both say so [2, 5,1].", &passages());
        assert_eq!(text, "Both say so [2, 1].");
        assert_eq!(cites.iter().map(|c| c.n).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(dropped, vec![5]);
    }

    #[test]
    fn adjacent_markers_are_resolved_and_deduplicated() {
        let (text, cites, _) = resolve_citations("Yes [2][1]. Again [2].", &passages());
        assert_eq!(text, "Yes [2][1]. Again [2].");
        assert_eq!(cites.iter().map(|c| c.n).collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn brackets_that_are_not_markers_are_left_alone() {
        let (text, cites, dropped) = resolve_citations("Index a[i] or [x, 1].", &passages());
        assert_eq!(text, "Index a[i] or [x, 1].");
        assert!(cites.is_empty());
        assert!(dropped.is_empty());
    }

    #[test]
    fn unsupported_sentence_gets_no_citation() {
        let (text, cites, _) =
            resolve_citations("Penguins live in Antarctica and eat fish.", &passages());
        assert_eq!(text, "Penguins live in Antarctica and eat fish.");
        assert!(cites.is_empty());
    }

    #[test]
    fn supported_sentence_gets_the_right_passage() {
        let (text, cites, _) = resolve_citations(
            "You run sovrag serve with --watch and the folder. Penguins eat fish.",
            &passages(),
        );
        assert_eq!(
            text,
            "You run sovrag serve with --watch and the folder [2]. Penguins eat fish."
        );
        assert_eq!(cites.len(), 1);
        assert_eq!(cites[0].n, 2);
        assert_eq!(cites[0].path, "docs/watch.md");
    }

    #[test]
    fn plural_folding_finds_support() {
        let (text, _, _) = resolve_citations("It watches other folders", &passages());
        assert_eq!(text, "It watches other folders [2]");
    }

    #[test]
    fn short_answer_is_grounded_on_its_one_content_word() {
        let (text, cites, _) = resolve_citations("Rust 1.94.", &passages());
        assert_eq!(text, "Rust 1.94 [1].");
        assert_eq!(cites[0].n, 1);
    }

    #[test]
    fn sentence_of_stopwords_is_not_cited() {
        let (text, cites, _) = resolve_citations("Yes, you can do that.", &passages());
        assert_eq!(text, "Yes, you can do that.");
        assert!(cites.is_empty());
    }

    #[test]
    fn singular_finds_plural_and_back() {
        let ps = [passage("a.md", "Caches are cleared on restart.")];
        let (text, _, _) = resolve_citations("The cache is cleared.", &ps);
        assert_eq!(text, "The cache is cleared [1].");
    }

    #[test]
    fn cited_sentence_is_not_cited_again() {
        let (text, cites, _) = resolve_citations(
            "Install sovrag with cargo. [1] Then watch a folder.",
            &passages(),
        );
        assert_eq!(
            text,
            "Install sovrag with cargo. [1] Then watch a folder [2]."
        );
        assert_eq!(cites.iter().map(|c| c.n).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn dropped_marker_sentence_can_still_be_grounded() {
        let (text, cites, dropped) =
            resolve_citations("Install sovrag with cargo [4].", &passages());
        assert_eq!(text, "Install sovrag with cargo [1].");
        assert_eq!(cites[0].n, 1);
        assert_eq!(dropped, vec![4]);
    }

    #[test]
    fn multiline_answer_is_split_into_sentences() {
        let (text, _, _) = resolve_citations(
            "Steps:\n- install sovrag with cargo\n- watch another folder",
            &passages(),
        );
        assert_eq!(
            text,
            "Steps:\n- install sovrag with cargo [1]\n- watch another folder [2]"
        );
    }

    #[test]
    fn no_passages_means_no_citations() {
        let (text, cites, dropped) = resolve_citations("Something [1].", &[]);
        assert_eq!(text, "Something.");
        assert!(cites.is_empty());
        assert_eq!(dropped, vec![1]);
    }

    #[test]
    fn a_sentence_is_recited_where_its_markers_were() {
        assert_eq!(
            recited("The ferry leaves at seven [2].", 1),
            "The ferry leaves at seven [1]."
        );
        assert_eq!(recited("Owls hunt. [2][3]", 1), "Owls hunt. [1]");
        assert_eq!(recited("Owls [2] hunt [3].", 4), "Owls [4] hunt.");
        assert_eq!(recited("No markers.", 1), "No markers.");
    }
}

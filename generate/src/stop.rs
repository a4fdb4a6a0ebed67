//! When to stop a small base model, and what of its output to keep.
//!
//! A base model does not know it is answering one question: after the answer
//! it goes on with a blank line and another document, starts a new
//! "Question:" as if writing more examples, or loops on a line. These rules
//! see the text piece by piece, as it is generated, so decoding can stop as
//! soon as the answer is over.
//!
//! Text is streamed to the user as it comes, so anything that might still be
//! cut (the start of a line that could become "Question:" or a repeat of an
//! earlier line, trailing whitespace that could become a blank line) is held
//! back until it is known to stay. What was streamed is therefore always a
//! prefix of the kept answer.

use crate::StopReason;

/// Labels that, at the start of a line, mean the model began a new example.
/// Compared without regard to ASCII case.
const NEW_EXAMPLE_LABELS: &[&str] = &["question:", "q:", "answer:", "passages:", "context:"];

/// Lines with fewer alphanumeric characters than this are never treated as
/// repeats: code fences, bullets and rules legitimately recur.
const MIN_REPEAT_ALNUM: usize = 3;

/// What one piece of generated text did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Step {
    /// Text that is now safe to stream.
    pub(crate) emit: String,
    /// Set when generation should stop.
    pub(crate) stop: Option<StopReason>,
}

/// How far a line matches a new-example header.
#[derive(Debug, PartialEq, Eq)]
enum HeaderMatch {
    No,
    /// The line so far could still become a header.
    Prefix,
    /// The line starts with a complete header.
    Full,
}

/// The stop rules' state for one answer.
#[derive(Debug, Default)]
pub(crate) struct StopRules {
    /// All kept text so far, leading whitespace removed.
    text: String,
    /// Bytes of `text` already streamed.
    emitted: usize,
    /// Where the line being generated starts in `text`.
    line_start: usize,
    /// Earlier complete lines, trimmed, that a repeat is checked against.
    lines: Vec<String>,
    stopped: Option<StopReason>,
}

impl StopRules {
    /// Feeds the next piece of generated text.
    pub(crate) fn push(&mut self, piece: &str) -> Step {
        if self.stopped.is_some() {
            return Step::default();
        }
        // The model usually puts a space or newline after "Answer:"; none of
        // that is answer text, and a newline there is not a blank line.
        let piece = if self.text.is_empty() {
            piece.trim_start()
        } else {
            piece
        };
        self.text.push_str(piece);

        while let Some(nl) = self.text[self.line_start..].find('\n') {
            let line = &self.text[self.line_start..self.line_start + nl];
            let reason = if line.trim().is_empty() {
                Some(StopReason::BlankLine)
            } else if header_match(line) == HeaderMatch::Full {
                Some(StopReason::EndOfText)
            } else if self.repeats_earlier(line) {
                Some(StopReason::RepeatedLine)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.cut_line();
                return self.stop(reason);
            }
            if counts_for_repeats(line) {
                self.lines.push(line.trim().to_owned());
            }
            self.line_start += nl + 1;
        }

        // Stop on a header as soon as it is complete rather than at its end of
        // line: nothing after it will be kept.
        if header_match(self.partial_line()) == HeaderMatch::Full {
            self.cut_line();
            return self.stop(StopReason::EndOfText);
        }

        let hold_line = header_match(self.partial_line()) == HeaderMatch::Prefix
            || self.could_repeat(self.partial_line());
        let end = if hold_line {
            self.line_start
        } else {
            self.text.len()
        };
        Step {
            emit: self.emit_up_to(end),
            stop: None,
        }
    }

    /// Ends the answer for a reason found outside the text (end-of-generation
    /// token, token cap, full context). Returns the text still to stream and
    /// the final reason: an unfinished last line that repeats an earlier one
    /// is cut and reported as the reason instead.
    pub(crate) fn finish(&mut self, reason: StopReason) -> (String, StopReason) {
        if let Some(stopped) = self.stopped {
            return (String::new(), stopped);
        }
        let partial = self.partial_line();
        let mut reason = reason;
        if header_match(partial) != HeaderMatch::No {
            self.cut_line();
        } else if self.repeats_earlier(partial) {
            self.cut_line();
            reason = StopReason::RepeatedLine;
        }
        let step = self.stop(reason);
        (step.emit, reason)
    }

    /// The answer kept so far, trimmed.
    pub(crate) fn text(&self) -> &str {
        self.text.trim()
    }

    fn partial_line(&self) -> &str {
        &self.text[self.line_start..]
    }

    fn cut_line(&mut self) {
        self.text.truncate(self.line_start);
        self.emitted = self.emitted.min(self.text.len());
    }

    fn stop(&mut self, reason: StopReason) -> Step {
        self.stopped = Some(reason);
        Step {
            emit: self.emit_up_to(self.text.len()),
            stop: Some(reason),
        }
    }

    /// Streams `text[emitted..end]` less trailing whitespace, which may yet
    /// turn out to be the start of a blank line or the end of the answer.
    fn emit_up_to(&mut self, end: usize) -> String {
        let end = self.text[..end].trim_end().len();
        if end <= self.emitted {
            return String::new();
        }
        let out = self.text[self.emitted..end].to_owned();
        self.emitted = end;
        out
    }

    fn repeats_earlier(&self, line: &str) -> bool {
        let line = line.trim();
        counts_for_repeats(line) && self.lines.iter().any(|l| l == line)
    }

    fn could_repeat(&self, partial: &str) -> bool {
        let partial = partial.trim();
        !partial.is_empty() && self.lines.iter().any(|l| l.starts_with(partial))
    }
}

fn counts_for_repeats(line: &str) -> bool {
    line.chars().filter(|c| c.is_alphanumeric()).count() >= MIN_REPEAT_ALNUM
}

/// Matches a line against the new-example labels and the passage header
/// `[n] (` the prompt uses.
fn header_match(line: &str) -> HeaderMatch {
    let line = line.trim_start();
    if line.is_empty() {
        return HeaderMatch::No;
    }
    let lower = line.to_ascii_lowercase();
    let mut best = HeaderMatch::No;
    for label in NEW_EXAMPLE_LABELS {
        if lower.starts_with(label) {
            return HeaderMatch::Full;
        }
        if label.starts_with(lower.as_str()) {
            best = HeaderMatch::Prefix;
        }
    }
    match passage_header_match(line) {
        HeaderMatch::No => best,
        m => m,
    }
}

/// `[`, digits, `]`, space, `(`: the start of a passage header.
fn passage_header_match(line: &str) -> HeaderMatch {
    enum S {
        Open,
        FirstDigit,
        Digits,
        Space,
        Paren,
    }
    let mut state = S::Open;
    for c in line.chars() {
        state = match (state, c) {
            (S::Open, '[') => S::FirstDigit,
            (S::FirstDigit | S::Digits, d) if d.is_ascii_digit() => S::Digits,
            (S::Digits, ']') => S::Space,
            (S::Space, ' ') => S::Paren,
            (S::Paren, '(') => return HeaderMatch::Full,
            _ => return HeaderMatch::No,
        };
    }
    HeaderMatch::Prefix
}

/// A client's stop sequences (OpenAI's `stop`): the answer ends where one first appears,
/// without it. Text that could still grow into one is held back, so nothing of a stop
/// sequence is ever streamed.
#[derive(Debug, Default)]
pub(crate) struct StopStrings {
    stops: Vec<String>,
    held: String,
}

impl StopStrings {
    pub(crate) fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Takes the next piece; returns the text now safe to pass on, and whether a stop
    /// sequence was met (everything from it on is dropped).
    pub(crate) fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (piece.to_owned(), false);
        }
        self.held.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return (out, true);
        }
        // The longest end of the held text that begins some stop sequence stays held.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| {
                s.char_indices()
                    .skip(1)
                    .map(|(i, _)| &s[..i])
                    .filter(|p| self.held.ends_with(p))
                    .map(str::len)
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        (out, false)
    }

    /// What is still held when the answer ends without a stop sequence.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_cut_the_answer_and_are_never_streamed() {
        let mut s = StopStrings::new(&["END".into(), "\n\n".into()]);
        let mut streamed = String::new();
        let mut stopped = false;
        for piece in ["Tea st", "eeps. E", "N", "D and more"] {
            let (out, stop) = s.push(piece);
            streamed.push_str(&out);
            if stop {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(streamed, "Tea steeps. ");
        // A prefix that does not become a stop sequence is let through, once known.
        let mut s = StopStrings::new(&["END".into()]);
        assert_eq!(s.push("the E"), ("the ".into(), false));
        assert_eq!(s.push("ND"), (String::new(), true));
        let mut s = StopStrings::new(&["END".into()]);
        assert_eq!(s.push("the E"), ("the ".into(), false));
        assert_eq!(s.push("gg"), ("Egg".into(), false));
        assert_eq!(s.push("E"), (String::new(), false));
        assert_eq!(s.finish(), "E");
        // None: everything passes at once.
        let mut s = StopStrings::new(&[]);
        assert_eq!(s.push("END"), ("END".into(), false));
    }

    /// Feeds pieces until a stop; returns (streamed text, kept text, reason).
    fn run(pieces: &[&str]) -> (String, String, Option<StopReason>) {
        let mut rules = StopRules::default();
        let mut streamed = String::new();
        for piece in pieces {
            let step = rules.push(piece);
            streamed.push_str(&step.emit);
            if let Some(reason) = step.stop {
                return (streamed, rules.text().to_owned(), Some(reason));
            }
        }
        (streamed, rules.text().to_owned(), None)
    }

    #[test]
    fn blank_line_stops_and_is_not_streamed() {
        let (streamed, kept, reason) = run(&[" Run", " it", ".", "\n", "\n", "More"]);
        assert_eq!(kept, "Run it.");
        assert_eq!(streamed, "Run it.");
        assert_eq!(reason, Some(StopReason::BlankLine));
    }

    #[test]
    fn leading_newlines_are_not_a_blank_line() {
        let (_, kept, reason) = run(&["\n", "\n", "Yes", "."]);
        assert_eq!(kept, "Yes.");
        assert_eq!(reason, None);
    }

    #[test]
    fn whitespace_only_line_counts_as_blank() {
        let (_, kept, reason) = run(&["One.\n", "  \n", "Two."]);
        assert_eq!(kept, "One.");
        assert_eq!(reason, Some(StopReason::BlankLine));
    }

    #[test]
    fn new_question_is_cut_as_soon_as_complete() {
        let (streamed, kept, reason) = run(&["Use --watch.\n", "Quest", "ion", ":", " how"]);
        assert_eq!(kept, "Use --watch.");
        assert_eq!(streamed, "Use --watch.");
        assert_eq!(reason, Some(StopReason::EndOfText));
    }

    #[test]
    fn passage_header_is_cut() {
        let (streamed, kept, reason) = run(&["It works [1].\n", "[2] (docs/a.md:1-3)"]);
        assert_eq!(kept, "It works [1].");
        assert_eq!(streamed, "It works [1].");
        assert_eq!(reason, Some(StopReason::EndOfText));
    }

    #[test]
    fn line_starting_with_marker_is_kept() {
        let (streamed, kept, reason) = run(&["A.\n", "[1", "] says", " so."]);
        assert_eq!(kept, "A.\n[1] says so.");
        assert_eq!(streamed, kept);
        assert_eq!(reason, None);
    }

    #[test]
    fn label_prefix_is_held_until_it_diverges() {
        let mut rules = StopRules::default();
        assert_eq!(rules.push("A.\n").emit, "A.");
        assert_eq!(rules.push("Qu").emit, "");
        assert_eq!(rules.push("ick.").emit, "\nQuick.");
    }

    #[test]
    fn repeated_line_is_cut() {
        let (streamed, kept, reason) = run(&[
            "Run sovrag serve.\n",
            "It watches files.\n",
            "Run sovrag",
            " serve.",
            "\n",
        ]);
        assert_eq!(kept, "Run sovrag serve.\nIt watches files.");
        assert_eq!(streamed, kept);
        assert_eq!(reason, Some(StopReason::RepeatedLine));
    }

    #[test]
    fn short_lines_may_recur() {
        let (_, kept, reason) = run(&["```\n", "code\n", "```\n", "Done."]);
        assert_eq!(kept, "```\ncode\n```\nDone.");
        assert_eq!(reason, None);
    }

    #[test]
    fn finish_cuts_unfinished_repeat() {
        let mut rules = StopRules::default();
        rules.push("Same line here.\n");
        rules.push("Same line here.");
        let (rest, reason) = rules.finish(StopReason::TokenCap);
        assert_eq!(rest, "");
        assert_eq!(reason, StopReason::RepeatedLine);
        assert_eq!(rules.text(), "Same line here.");
    }

    #[test]
    fn finish_flushes_held_text_that_is_not_a_repeat() {
        let mut rules = StopRules::default();
        assert_eq!(rules.push("Same line here.\nSame").emit, "Same line here.");
        let (rest, reason) = rules.finish(StopReason::EndOfText);
        assert_eq!(rest, "\nSame");
        assert_eq!(reason, StopReason::EndOfText);
    }

    #[test]
    fn finish_cuts_a_partial_header() {
        let mut rules = StopRules::default();
        rules.push("Answer text.\nQuest");
        let (rest, reason) = rules.finish(StopReason::TokenCap);
        assert_eq!(rest, "");
        assert_eq!(reason, StopReason::TokenCap);
        assert_eq!(rules.text(), "Answer text.");
    }

    #[test]
    fn nothing_after_stop() {
        let mut rules = StopRules::default();
        rules.push("A.\n\n");
        assert_eq!(rules.push("more"), Step::default());
        assert_eq!(rules.finish(StopReason::TokenCap).1, StopReason::BlankLine);
    }

    #[test]
    fn header_matching() {
        assert_eq!(header_match("Question: x"), HeaderMatch::Full);
        assert_eq!(header_match("  question:"), HeaderMatch::Full);
        assert_eq!(header_match("Ques"), HeaderMatch::Prefix);
        assert_eq!(header_match("[12] (a.md:1-2)"), HeaderMatch::Full);
        assert_eq!(header_match("[12]"), HeaderMatch::Prefix);
        assert_eq!(header_match("[12] says"), HeaderMatch::No);
        assert_eq!(header_match("The answer"), HeaderMatch::No);
    }
}

//! What an answer streams while it is written.
//!
//! A streamed sentence cannot be taken back, so with verification on, a sentence is sent as
//! soon as it is complete and the lexical test finds it in the passages it cites (the test
//! verification itself applies first, so verification will keep it). From the first
//! sentence that test does not pass, nothing more is sent until verification has ruled;
//! then the rest of the checked answer. Without verification the draft streams as it comes.
//! Either way, what is sent is always the start of the final answer, and [`Gate::finish`]
//! sends the rest of it.

use crate::Passage;
use crate::cite;

pub(crate) struct Gate<'p> {
    /// `None`: verification is off, the draft streams as it comes.
    passages: Option<&'p [Passage]>,
    /// Draft text not yet sent.
    pending: String,
    /// Everything sent so far.
    sent: String,
    /// A sentence failed the lexical test: hold everything until the end.
    held: bool,
}

impl<'p> Gate<'p> {
    /// A gate for an answer verified against `passages`, or, with `None`, not verified.
    pub(crate) fn new(passages: Option<&'p [Passage]>) -> Self {
        Gate {
            passages,
            pending: String::new(),
            sent: String::new(),
            held: false,
        }
    }

    /// Takes the next piece of the draft; returns what may be sent now.
    pub(crate) fn push(&mut self, piece: &str) -> String {
        let Some(passages) = self.passages else {
            self.sent.push_str(piece);
            return piece.to_owned();
        };
        self.pending.push_str(piece);
        let mut out = String::new();
        while !self.held {
            let Some(&(s, e)) = cite::sentences(&self.pending).first() else {
                break;
            };
            // Complete only once the next sentence has begun: markers may still follow.
            let next = self.pending[e..].trim_start();
            if next.is_empty() || next.starts_with('[') {
                break;
            }
            let sentence = self.pending[s..e].trim().to_owned();
            if !cite::lexically_supported(&sentence, passages) {
                self.held = true;
                break;
            }
            let piece = if self.sent.is_empty() {
                sentence
            } else {
                format!(" {sentence}")
            };
            self.sent.push_str(&piece);
            out.push_str(&piece);
            self.pending.drain(..e);
        }
        out
    }

    /// The rest of the final `answer` after what was sent; empty if the answer does not
    /// continue it (nothing can be taken back: the final answer is in the response).
    pub(crate) fn finish(&mut self, answer: &str) -> String {
        match answer.strip_prefix(self.sent.as_str()) {
            Some(rest) => {
                self.sent.push_str(rest);
                rest.to_owned()
            }
            None => {
                tracing::debug!("the streamed text is not the start of the final answer");
                String::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passages() -> Vec<Passage> {
        vec![
            Passage {
                text: "The ferry to Skellig leaves at seven in the morning.".into(),
                ..Default::default()
            },
            Passage {
                text: "The barn owl hunts at dusk.".into(),
                ..Default::default()
            },
        ]
    }

    fn stream(gate: &mut Gate<'_>, draft: &str) -> Vec<String> {
        // Piece by piece, a few bytes at a time, as tokens arrive.
        let chars: Vec<char> = draft.chars().collect();
        chars
            .chunks(3)
            .map(|c| gate.push(&c.iter().collect::<String>()))
            .filter(|s| !s.is_empty())
            .collect()
    }

    #[test]
    fn copied_sentences_stream_as_they_complete() {
        let ps = passages();
        let mut g = Gate::new(Some(&ps));
        let sent = stream(
            &mut g,
            "The ferry to Skellig leaves at seven in the morning. [1] The barn owl hunts at dusk. [2]",
        );
        // The first is sent once the second begins; the last waits for the end.
        assert_eq!(
            sent,
            vec!["The ferry to Skellig leaves at seven in the morning. [1]"]
        );
        let last = g.finish(
            "The ferry to Skellig leaves at seven in the morning. [1] The barn owl hunts at dusk. [2]",
        );
        assert_eq!(last, " The barn owl hunts at dusk. [2]");
    }

    #[test]
    fn a_sentence_not_in_its_passage_holds_the_rest() {
        let ps = passages();
        let mut g = Gate::new(Some(&ps));
        let sent = stream(
            &mut g,
            "The ferry sinks off Kerry. [1] The barn owl hunts at dusk. [2] More.",
        );
        assert!(sent.is_empty(), "{sent:?}");
        // Verification dropped the first sentence: the rest comes whole at the end.
        assert_eq!(
            g.finish("The barn owl hunts at dusk. [2]"),
            "The barn owl hunts at dusk. [2]"
        );
    }

    #[test]
    fn unverified_drafts_stream_as_they_come() {
        let mut g = Gate::new(None);
        assert_eq!(g.push("The ferry"), "The ferry");
        assert_eq!(g.push(" sinks. [1]"), " sinks. [1]");
        assert_eq!(g.finish("The ferry sinks. [1]"), "");
        // An answer that does not continue the stream sends nothing more.
        let mut g = Gate::new(None);
        g.push("Draft");
        assert_eq!(g.finish("Other"), "");
    }
}

//! Turning a stream of token bytes into text.
//!
//! A token's piece is a byte string that may end in the middle of a multi-byte
//! UTF-8 character (emoji, CJK, accented letters under byte-level vocabularies);
//! the rest of the character arrives with the next token. Emitting each piece
//! lossily would stream replacement characters to the user, so bytes are held
//! back until they form complete characters.

/// Accumulates bytes and hands out only complete UTF-8 text.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes` and returns the text that is now complete.
    ///
    /// Bytes that can never become valid UTF-8 become U+FFFD rather than
    /// blocking the stream forever.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // Safe to slice: `valid_up_to` bytes were just validated.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match err.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes whatever is left at the end of generation.
    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passes_through() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"hello"), "hello");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn split_character_is_held_until_complete() {
        let bytes = "né😀".as_bytes();
        let mut s = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&s.push(std::slice::from_ref(b)));
        }
        assert_eq!(out, "né😀");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn partial_character_waits() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(&[b'a', e[0]]), "a");
        assert_eq!(s.push(&e[1..]), "é");
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[b'a', 0xff, b'b']), "a\u{fffd}b");
    }

    #[test]
    fn truncated_tail_is_flushed_lossily() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&"😀".as_bytes()[..2]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }
}

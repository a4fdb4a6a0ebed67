//! RTF (Word, WordPad, TextEdit, pandoc): the body's paragraphs, headings from
//! `\outlinelevelN`, and table rows a line each with their cells separated by ` | `.
//!
//! Written here, not taken from a crate: `rtf-parser` 0.4 (the maintained one) measured on
//! the shared corpus glued paragraphs together ("First SectionThis is…"), kept document
//! metadata, and indexed embedded pictures as hex. RTF is a flat stream of groups and
//! control words, read here in one pass with an explicit stack of group states, so no
//! nesting depth can overflow the stack.
//!
//! Left out: destinations that are not body text (font, colour and style tables, document
//! information, pictures, embedded objects, field instructions, headers and footers,
//! bookmarks, anything marked `\*`) and hidden text (`\v`). Bytes written as `\'hh` (and raw
//! 8-bit bytes) are read in the document's code page (`\ansicpgN`, else Windows-1252);
//! `\uN` is Unicode, with its `\ucN` fallback characters skipped.

use super::{Extracted, Failure, Format, TextBuilder};

/// Groups whose first control word is one of these hold no body text.
const SKIPPED: &[&str] = &[
    "fonttbl",
    "colortbl",
    "stylesheet",
    "info",
    "pict",
    "object",
    "themedata",
    "colorschememapping",
    "latentstyles",
    "datastore",
    "xmlnstbl",
    "rsidtbl",
    "generator",
    "listtable",
    "listoverridetable",
    "revtbl",
    "fldinst",
    "header",
    "headerl",
    "headerr",
    "headerf",
    "footer",
    "footerl",
    "footerr",
    "footerf",
    "bkmkstart",
    "bkmkend",
    "filetbl",
    "pgdsctbl",
    "pntxtb",
    "pntxta",
    "xe",
    "tc",
    "userprops",
    "docvar",
    "nonshppict",
    "objdata",
    "ftnsep",
    "ftnsepc",
    "aftnsep",
    "aftnsepc",
    "mmathPr",
    "wgrffmtfilter",
];

/// What a group changes, restored when it closes.
#[derive(Clone)]
struct Group {
    /// Nothing in this group is body text.
    skip: bool,
    /// Hidden text (`\v`).
    hidden: bool,
    /// Fallback characters after each `\uN` (`\ucN`, default 1).
    uc: usize,
    /// No control word or text seen yet: the first control word may name a destination.
    fresh: bool,
    /// `\outlinelevelN`: paragraphs are headings of level N + 1. Paragraph properties are
    /// group state in RTF too, and last until `\pard`.
    level: Option<usize>,
    /// `\intbl`: inside a table, where `\par` ends a line of a cell, not the paragraph.
    in_table: bool,
    /// A footnote: read where it is anchored, set apart by spaces.
    note: bool,
}

/// The paragraph being read: its text, and the cells of a table row before it.
#[derive(Default)]
struct Paragraph {
    text: String,
    cells: Vec<String>,
}

struct Reader {
    b: TextBuilder,
    para: Paragraph,
    /// Code-page bytes not decoded yet (a double-byte code page spans two `\'hh`).
    bytes: Vec<u8>,
    encoding: &'static encoding_rs::Encoding,
    /// Fallback characters still to skip after a `\uN`.
    skip_fallback: usize,
    /// A UTF-16 high surrogate waiting for its pair.
    high: Option<u16>,
}

pub(crate) fn extract(bytes: &[u8]) -> Result<Extracted, Failure> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    // `{\rtf1` normally; a fragment (pandoc without --standalone) starts with any group.
    if !bytes[start..].starts_with(b"{\\") {
        return Err(Failure::Unreadable(
            "not an RTF file (no {\\rtf header)".into(),
        ));
    }
    let mut r = Reader {
        b: TextBuilder::default(),
        para: Paragraph::default(),
        bytes: Vec::new(),
        encoding: encoding_rs::WINDOWS_1252,
        skip_fallback: 0,
        high: None,
    };
    let mut stack: Vec<Group> = Vec::new();
    let mut g = Group {
        skip: false,
        hidden: false,
        uc: 1,
        fresh: true,
        level: None,
        in_table: false,
        note: false,
    };
    let s = &bytes[start..];
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'{' => {
                r.flush_bytes();
                r.skip_fallback = 0;
                stack.push(g.clone());
                g.fresh = true;
                g.note = false;
                i += 1;
            }
            b'}' => {
                r.flush_bytes();
                r.skip_fallback = 0;
                if g.note && !g.skip {
                    r.para.text.push(' ');
                }
                if let Some(outer) = stack.pop() {
                    g = outer;
                }
                i += 1;
            }
            b'\\' => {
                let (token, next) = control(s, i);
                i = next;
                let first = std::mem::replace(&mut g.fresh, false);
                r.control(token, &mut g, first, s, &mut i);
            }
            b'\r' | b'\n' => i += 1,
            c => {
                g.fresh = false;
                if r.skip_fallback > 0 {
                    r.skip_fallback -= 1;
                } else if !g.skip && !g.hidden {
                    if c.is_ascii() {
                        r.flush_bytes();
                        r.para.text.push(c as char);
                    } else {
                        r.bytes.push(c);
                    }
                }
                i += 1;
            }
        }
    }
    r.flush_bytes();
    r.end_paragraph(None);
    let (text, _) = r.b.finish();
    Ok(Extracted {
        format: Format::Rtf,
        text,
        pages: Vec::new(),
        title: None,
    })
}

/// A control word or symbol after a backslash.
enum Token<'a> {
    Word(&'a str, Option<i32>),
    /// `\'hh`.
    Byte(u8),
    Symbol(u8),
}

/// The control token starting at `s[i]` (a backslash), and where the text after it starts.
fn control(s: &[u8], i: usize) -> (Token<'_>, usize) {
    let mut j = i + 1;
    let Some(&c) = s.get(j) else {
        return (Token::Symbol(b'\\'), j);
    };
    if !c.is_ascii_alphabetic() {
        if c == b'\'' {
            let hex = s
                .get(j + 1..j + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                return (Token::Byte(v), j + 3);
            }
        }
        return (Token::Symbol(c), j + 1);
    }
    while s.get(j).is_some_and(u8::is_ascii_alphabetic) {
        j += 1;
    }
    // Letters only, so this is ASCII.
    let word = std::str::from_utf8(&s[i + 1..j]).unwrap_or_default();
    let num_start = j;
    if s.get(j) == Some(&b'-') {
        j += 1;
    }
    while s.get(j).is_some_and(u8::is_ascii_digit) {
        j += 1;
    }
    let param = std::str::from_utf8(&s[num_start..j])
        .ok()
        .and_then(|n| n.parse::<i64>().ok())
        .map(|n| n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32);
    if param.is_none() {
        j = num_start;
    }
    // One space after a control word belongs to it.
    if s.get(j) == Some(&b' ') {
        j += 1;
    }
    (Token::Word(word, param), j)
}

impl Reader {
    fn control(&mut self, token: Token<'_>, g: &mut Group, first: bool, s: &[u8], i: &mut usize) {
        let text = !g.skip && !g.hidden;
        // A fallback character can be a whole control token (`\'e9`, `\emdash`).
        if self.skip_fallback > 0 && !matches!(token, Token::Word("bin", _)) {
            self.skip_fallback -= 1;
            return;
        }
        match token {
            Token::Byte(v) => {
                if text {
                    self.bytes.push(v);
                }
            }
            Token::Symbol(c) => {
                self.flush_bytes();
                match c {
                    b'*' => g.skip = true,
                    b'\\' | b'{' | b'}' if text => self.para.text.push(c as char),
                    b'~' if text => self.para.text.push(' '),
                    b'_' if text => self.para.text.push('-'),
                    b'\r' | b'\n' if text => self.end_paragraph(g.level),
                    _ => {}
                }
            }
            Token::Word(word, param) => {
                self.flush_bytes();
                if word == "bin" {
                    // Raw binary data follows: never read as text.
                    *i = i.saturating_add(usize::try_from(param.unwrap_or(0)).unwrap_or(0));
                    *i = (*i).min(s.len());
                    return;
                }
                if first && SKIPPED.contains(&word) {
                    g.skip = true;
                    return;
                }
                if first && word == "footnote" && text {
                    g.note = true;
                    self.para.text.push(' ');
                    return;
                }
                self.word(word, param, g, text);
            }
        }
    }

    fn word(&mut self, word: &str, param: Option<i32>, g: &mut Group, text: bool) {
        let push = |r: &mut Self, c: char| {
            if text {
                r.para.text.push(c);
            }
        };
        match word {
            "ansicpg" => {
                let label = format!("windows-{}", param.unwrap_or(1252));
                let cp = param.unwrap_or(1252);
                self.encoding = encoding_rs::Encoding::for_label(label.as_bytes())
                    .or_else(|| encoding_rs::Encoding::for_label(format!("cp{cp}").as_bytes()))
                    .unwrap_or(encoding_rs::WINDOWS_1252);
            }
            "uc" => g.uc = usize::try_from(param.unwrap_or(1)).unwrap_or(1),
            "u" => {
                // A signed 16-bit value: negative for code units above 0x7FFF.
                let unit = param.unwrap_or(0).rem_euclid(65536) as u16;
                self.skip_fallback = g.uc;
                if text {
                    self.unit(unit);
                }
            }
            "v" => g.hidden = param != Some(0),
            "plain" => g.hidden = false,
            "pard" => {
                g.level = None;
                g.in_table = false;
            }
            "intbl" => g.in_table = true,
            "outlinelevel" => {
                g.level = param.and_then(|l| usize::try_from(l).ok()).map(|l| l + 1);
            }
            "par" | "sect" | "page" if text => {
                if g.in_table {
                    self.para.text.push(' ');
                } else {
                    self.end_paragraph(g.level);
                }
            }
            "cell" | "nestcell" if text => {
                let cell = std::mem::take(&mut self.para.text);
                self.para.cells.push(cell);
            }
            "row" | "nestrow" if text => self.end_paragraph(None),
            "line" => push(self, '\n'),
            "tab" | "emspace" | "enspace" | "qmspace" => push(self, ' '),
            "emdash" => push(self, '—'),
            "endash" => push(self, '–'),
            "bullet" => push(self, '•'),
            "lquote" => push(self, '‘'),
            "rquote" => push(self, '’'),
            "ldblquote" => push(self, '“'),
            "rdblquote" => push(self, '”'),
            _ => {}
        }
    }

    /// One UTF-16 code unit from `\uN`, paired with the one before it if that was a high
    /// surrogate.
    fn unit(&mut self, unit: u16) {
        let c = match (self.high.take(), unit) {
            (None, 0xD800..=0xDBFF) => {
                self.high = Some(unit);
                return;
            }
            (Some(h), 0xDC00..=0xDFFF) => {
                let c = 0x10000 + ((u32::from(h) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                char::from_u32(c)
            }
            (_, u) => char::from_u32(u32::from(u)),
        };
        self.para.text.push(c.unwrap_or('\u{FFFD}'));
    }

    fn flush_bytes(&mut self) {
        if !self.bytes.is_empty() {
            let (text, _) = self.encoding.decode_without_bom_handling(&self.bytes);
            self.para.text.push_str(&text);
            self.bytes.clear();
        }
    }

    /// Ends the paragraph (or table row) being read: a heading of `level`, or a paragraph.
    fn end_paragraph(&mut self, level: Option<usize>) {
        self.flush_bytes();
        let mut p = std::mem::take(&mut self.para);
        if !p.cells.is_empty() {
            if !p.text.trim().is_empty() {
                p.cells.push(std::mem::take(&mut p.text));
            }
            let cells: Vec<&str> = p.cells.iter().map(|c| c.trim()).collect();
            p.text = cells.join(" | ");
        }
        match level {
            Some(level) if p.cells.is_empty() => self.b.heading(level, &p.text),
            _ => self.b.paragraph(&p.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(rtf: &str) -> String {
        extract(rtf.as_bytes()).unwrap().text
    }

    #[test]
    fn paragraphs_headings_and_tables() {
        let rtf = r"{\rtf1\ansi\deff0{\fonttbl{\f0 Helvetica;}}{\colortbl;\red255\green0\blue0;}
{\info{\title Secret title}{\author Someone}}
{\pard \outlinelevel0 \b Guide\par}
{\pard First para.\par}
{\pard \outlinelevel1 Install\par}
{\pard Run it.\line Then wait.\par}
{\trowd\cellx100\cellx200
{{\pard\intbl A1\par}\cell}{{\pard\intbl B1\par}\cell}\intbl\row}
{\trowd\cellx100\cellx200\pard\intbl A2\cell B2\cell\row}
{\pard After.\par}
}";
        assert_eq!(
            text(rtf),
            "# Guide\n\nFirst para.\n\n## Install\n\nRun it.\nThen wait.\n\nA1 | B1\n\nA2 | B2\n\nAfter."
        );
    }

    #[test]
    fn encodings_unicode_and_skipped_parts() {
        // Windows-1252 bytes, \u with its fallback, a surrogate pair, escapes.
        let rtf = r"{\rtf1\ansi\ansicpg1252 caf\'e9 o\'f9 \u8364?5 \u-10179?\u-8704? \uc2\u8217\'3f\'3fs{\*\bkmkstart x}\{a\}\\ \emdash}";
        assert_eq!(text(rtf), "café où €5 😀 ’s{a}\\ —");
        // Cyrillic through the document's code page.
        assert_eq!(
            text(r"{\rtf1\ansi\ansicpg1251 \'cf\'f0\'e8\'e2\'e5\'f2}"),
            "Привет"
        );
        // Hidden text, a field's instruction, a picture, binary data.
        let rtf = r"{\rtf1 Shown {\v hidden}{\v0 too}. {\field{\*\fldinst HYPERLINK x}{\fldrslt link}} {\pict\pngblip 89504e47} {\object\bin3 {}x}end}";
        assert_eq!(text(rtf), "Shown too. link end");
    }

    #[test]
    fn not_rtf_and_broken_rtf() {
        assert!(matches!(extract(b"hello"), Err(Failure::Unreadable(_))));
        // A fragment without the header; a footnote set apart where it is anchored.
        assert_eq!(
            text(r"{\pard Studied.\chftn{\footnote \pard See [2].} It was\par}"),
            "Studied. See [2]. It was"
        );
        // Unbalanced and truncated: what was read is kept.
        assert_eq!(
            text(r"{\rtf1 one\par}} two\par {\b three"),
            "one\n\ntwo\n\nthree"
        );
        assert_eq!(text(r"{\rtf1 x\"), "x\\");
        // Deep nesting is a loop, not recursion.
        let deep = format!(
            r"{{\rtf1 {}deep{}}}",
            "{".repeat(100_000),
            "}".repeat(100_000)
        );
        assert_eq!(text(&deep), "deep");
    }
}

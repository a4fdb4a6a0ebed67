//! The zip-of-XML formats: DOCX, ODT, PPTX and EPUB.
//!
//! Members are read through a budget ([`Limits::max_decompressed_bytes`] for the whole
//! file), counted as they decompress rather than trusted from the zip's headers, so a zip
//! bomb stops at the cap with `TooLarge`.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};
use zip::ZipArchive;

use super::{Extracted, Failure, Format, Limits, TextBuilder, html};

/// A zip archive and what may still be decompressed from it.
struct Archive<'a> {
    members: Members<'a>,
    budget: u64,
    /// The whole budget, for the message.
    cap: u64,
}

enum Members<'a> {
    Zip(ZipArchive<Cursor<&'a [u8]>>),
    /// What could be read, front to back, from a zip whose directory is lost (a truncated
    /// download, a damaged end): decompressed already, within the budget.
    Salvaged(HashMap<String, Vec<u8>>),
}

impl<'a> Archive<'a> {
    fn open(bytes: &'a [u8], limits: &Limits, what: &str) -> Result<Self, Failure> {
        let budget = limits.max_decompressed_bytes;
        match ZipArchive::new(Cursor::new(bytes)) {
            Ok(zip) => Ok(Self {
                members: Members::Zip(zip),
                budget,
                cap: budget,
            }),
            Err(e) => {
                let (members, left) = salvage(bytes, budget)?;
                if members.is_empty() {
                    return Err(Failure::Unreadable(format!(
                        "not a valid {what} file (zip): {e}"
                    )));
                }
                tracing::debug!(
                    members = members.len(),
                    "zip directory unreadable ({e}); read its parts in order"
                );
                Ok(Self {
                    members: Members::Salvaged(members),
                    budget: left,
                    cap: budget,
                })
            }
        }
    }

    /// The member `name`, or `None` where the archive has none.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, Failure> {
        let zip = match &mut self.members {
            Members::Zip(zip) => zip,
            Members::Salvaged(m) => return Ok(m.get(name).cloned()),
        };
        let mut file = match zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(zip::result::ZipError::UnsupportedArchive(m)) if m.contains("ncrypt") => {
                return Err(Failure::Encrypted);
            }
            Err(e) => return Err(Failure::Unreadable(format!("{name}: {e}"))),
        };
        let out = take_within(&mut file, &mut self.budget)
            .map_err(|e| Failure::Unreadable(format!("{name}: {e}")))?;
        out.map(Some).ok_or_else(|| too_large(self.cap))
    }

    /// The member `name` where it can be read; a part the document can do without (styles,
    /// one slide, one chapter) that is damaged costs only itself. A zip bomb or encryption
    /// still fails the whole file.
    fn optional(&mut self, name: &str) -> Result<Option<Vec<u8>>, Failure> {
        match self.read(name) {
            Err(Failure::Unreadable(e)) => {
                tracing::debug!("damaged part left out: {e}");
                Ok(None)
            }
            other => other,
        }
    }

    fn required(&mut self, name: &str, what: &str) -> Result<Vec<u8>, Failure> {
        self.read(name)?
            .ok_or_else(|| Failure::Unreadable(format!("not a valid {what} file: no {name}")))
    }

    fn names(&self) -> Vec<String> {
        match &self.members {
            Members::Zip(zip) => zip
                .file_names()
                .filter_map(Result::ok)
                .map(|n| n.into_owned())
                .collect(),
            Members::Salvaged(m) => m.keys().cloned().collect(),
        }
    }
}

/// Reads `r` whole if it fits in `budget` (taking it from there); `None` if it does not.
fn take_within(r: &mut impl Read, budget: &mut u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    r.take(*budget + 1).read_to_end(&mut out)?;
    let n = out.len() as u64;
    if n > *budget {
        return Ok(None);
    }
    *budget -= n;
    Ok(Some(out))
}

fn too_large(cap: u64) -> Failure {
    Failure::TooLarge(format!(
        "its parts decompress to more than the {} MB cap (a zip bomb?)",
        cap >> 20
    ))
}

/// The members of a zip read from its local headers, front to back, up to the first damage;
/// with what is left of `budget`.
fn salvage(bytes: &[u8], cap: u64) -> Result<(HashMap<String, Vec<u8>>, u64), Failure> {
    let (mut members, mut budget) = (HashMap::new(), cap);
    let mut cursor = Cursor::new(bytes);
    while let Ok(Some(mut file)) = zip::read::read_zipfile_from_stream(&mut cursor) {
        let Ok(name) = file.name().map(|n| n.into_owned()) else {
            break;
        };
        match take_within(&mut file, &mut budget) {
            Ok(Some(data)) => members.insert(name, data),
            Ok(None) => return Err(too_large(cap)),
            // The member the damage is in, and everything after it, is lost.
            Err(_) => break,
        };
    }
    Ok((members, budget))
}

/// One XML event, reduced to what the extractors look at.
enum Xml<'e> {
    Start(&'e BytesStart<'e>),
    /// An element with no content (`<w:tab/>`); also reported as `Start` then `End`.
    End(&'e str),
    Text(&'e str),
}

/// Calls `f` for every event of `xml`, entities resolved.
fn each_event(xml: &[u8], mut f: impl FnMut(Xml<'_>)) -> Result<(), Failure> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| Failure::Unreadable(format!("malformed XML: {e}")))?;
        match event {
            Event::Start(e) => f(Xml::Start(&e)),
            Event::Empty(e) => {
                f(Xml::Start(&e));
                f(Xml::End(e.local_name().into_inner()));
            }
            Event::End(e) => f(Xml::End(e.local_name().into_inner())),
            Event::Text(t) => f(Xml::Text(&t.xml10_content())),
            Event::CData(t) => f(Xml::Text(&t.xml10_content())),
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    _ => quick_xml::escape::resolve_predefined_entity(&name).map(str::to_owned),
                };
                if let Some(s) = resolved {
                    f(Xml::Text(&s));
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

fn local(e: &BytesStart<'_>) -> String {
    e.local_name().into_inner().to_owned()
}

/// The value of the attribute whose local name is `name`.
fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().into_inner() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// Appends `text` to the innermost open paragraph.
fn push(open: &mut [(Option<usize>, String)], text: &str) {
    if let Some((_, t)) = open.last_mut() {
        t.push_str(text);
    }
}

/// DOCX: `word/document.xml`, headings from paragraph styles (`Heading 1`…, `Title`, or a
/// style's outline level), as `styles.xml` names them.
pub(crate) fn docx(bytes: &[u8], limits: &Limits) -> Result<Extracted, Failure> {
    let mut zip = Archive::open(bytes, limits, "DOCX")?;
    if zip.optional("EncryptionInfo")?.is_some() {
        return Err(Failure::Encrypted);
    }
    // Without readable styles the text is all there, only headings read as paragraphs.
    let levels = zip
        .optional("word/styles.xml")?
        .and_then(|xml| docx_heading_styles(&xml).ok())
        .unwrap_or_default();
    let xml = zip.required("word/document.xml", "DOCX")?;
    let mut b = TextBuilder::default();
    // Paragraphs nest (a text box's paragraphs inside a paragraph): a stack of open ones,
    // each with its heading level.
    let mut open: Vec<(Option<usize>, String)> = Vec::new();
    let mut in_text = false;
    // Inside `mc:Fallback`: the same content again, for readers that do not know the
    // `mc:Choice` before it (a text box drawn twice); read once.
    let mut fallback = 0usize;
    each_event(&xml, |ev| match ev {
        Xml::Start(e) if e.local_name().into_inner() == "Fallback" => fallback += 1,
        Xml::End("Fallback") => fallback = fallback.saturating_sub(1),
        _ if fallback > 0 => {}
        Xml::Start(e) => match e.local_name().into_inner() {
            "p" => open.push((None, String::new())),
            "pStyle" => {
                if let Some((level, _)) = open.last_mut() {
                    *level = attr(e, "val").and_then(|v| levels.get(&v).copied());
                }
            }
            "t" => in_text = true,
            "tab" => push(&mut open, "\t"),
            "br" | "cr" => push(&mut open, "\n"),
            _ => {}
        },
        Xml::End(name) => match name {
            "t" => in_text = false,
            "p" => match open.pop() {
                Some((Some(l), text)) => b.heading(l, &text),
                Some((None, text)) => b.paragraph(&text),
                None => {}
            },
            _ => {}
        },
        Xml::Text(t) if in_text => push(&mut open, t),
        Xml::Text(_) => {}
    })?;
    let (text, _) = b.finish();
    Ok(Extracted {
        format: Format::Docx,
        text,
        pages: Vec::new(),
        title: None,
    })
}

/// Style id → heading level, for the styles that are headings.
fn docx_heading_styles(xml: &[u8]) -> Result<HashMap<String, usize>, Failure> {
    let mut out = HashMap::new();
    let mut id: Option<String> = None;
    each_event(xml, |ev| {
        if let Xml::Start(e) = ev {
            match e.local_name().into_inner() {
                "style" => id = attr(e, "styleId"),
                "name" => {
                    if let (Some(id), Some(name)) = (&id, attr(e, "val")) {
                        let name = name.to_ascii_lowercase();
                        let level = if name == "title" {
                            Some(1)
                        } else {
                            name.strip_prefix("heading ")
                                .and_then(|n| n.trim().parse::<usize>().ok())
                        };
                        if let Some(l) = level {
                            out.insert(id.clone(), l);
                        }
                    }
                }
                "outlineLvl" => {
                    if let (Some(id), Some(l)) =
                        (&id, attr(e, "val").and_then(|v| v.parse::<usize>().ok()))
                    {
                        out.entry(id.clone()).or_insert(l + 1);
                    }
                }
                _ => {}
            }
        }
    })?;
    Ok(out)
}

/// ODT: `content.xml`, headings from `text:h` and their outline level.
pub(crate) fn odt(bytes: &[u8], limits: &Limits) -> Result<Extracted, Failure> {
    let mut zip = Archive::open(bytes, limits, "ODT")?;
    if let Some(manifest) = zip.optional("META-INF/manifest.xml")?
        && String::from_utf8_lossy(&manifest).contains("encryption-data")
    {
        return Err(Failure::Encrypted);
    }
    let xml = zip.required("content.xml", "ODT")?;
    let mut b = TextBuilder::default();
    // Paragraphs nest (a footnote's paragraph inside a paragraph): a stack of open ones.
    let mut open: Vec<(Option<usize>, String)> = Vec::new();
    let mut in_body = false;
    // Inside `text:tracked-changes`: deleted text and change records, not the document.
    let mut changes = 0usize;
    each_event(&xml, |ev| match ev {
        Xml::Start(e) if e.local_name().into_inner() == "tracked-changes" => changes += 1,
        Xml::End("tracked-changes") => changes = changes.saturating_sub(1),
        _ if changes > 0 => {}
        Xml::Start(e) => match e.local_name().into_inner() {
            "body" => in_body = true,
            "h" => {
                let level = attr(e, "outline-level")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                open.push((Some(level), String::new()));
            }
            "p" => open.push((None, String::new())),
            "s" => {
                let n = attr(e, "c").and_then(|v| v.parse().ok()).unwrap_or(1usize);
                push(&mut open, &" ".repeat(n.min(64)));
            }
            "tab" => push(&mut open, "\t"),
            "line-break" => push(&mut open, "\n"),
            _ => {}
        },
        Xml::End(name) => {
            if matches!(name, "h" | "p")
                && let Some((level, text)) = open.pop()
            {
                match level {
                    Some(l) => b.heading(l, &text),
                    None => b.paragraph(&text),
                }
            }
        }
        Xml::Text(t) if in_body => push(&mut open, t),
        Xml::Text(_) => {}
    })?;
    let (text, _) = b.finish();
    Ok(Extracted {
        format: Format::Odt,
        text,
        pages: Vec::new(),
        title: None,
    })
}

/// PPTX: each slide (in the order the presentation lists them) is a page; a title
/// placeholder's text is the slide's heading.
pub(crate) fn pptx(bytes: &[u8], limits: &Limits) -> Result<Extracted, Failure> {
    let mut zip = Archive::open(bytes, limits, "PPTX")?;
    let slides = pptx_slide_order(&mut zip)?;
    if slides.is_empty() {
        return Err(Failure::Unreadable("not a PPTX: no slides".into()));
    }
    let mut b = TextBuilder::default();
    for name in slides {
        // A slide that cannot be read keeps its number: the next slide is still slide n + 1.
        b.page();
        let Some(xml) = zip.optional(&name)? else {
            continue;
        };
        let mut para = String::new();
        let mut title = false;
        let mut in_text = false;
        let parsed = each_event(&xml, |ev| match ev {
            Xml::Start(e) => match e.local_name().into_inner() {
                "ph" => {
                    title = matches!(attr(e, "type").as_deref(), Some("title" | "ctrTitle"));
                }
                "p" => para.clear(),
                "t" => in_text = true,
                "br" => para.push('\n'),
                _ => {}
            },
            Xml::End(name) => match name {
                "t" => in_text = false,
                "p" => {
                    if title {
                        b.heading(2, &para);
                    } else {
                        b.paragraph(&para);
                    }
                    para.clear();
                }
                "sp" => title = false,
                _ => {}
            },
            Xml::Text(t) if in_text => para.push_str(t),
            Xml::Text(_) => {}
        });
        if let Err(e) = parsed {
            tracing::debug!(slide = %name, "slide read up to damage: {e}");
        }
    }
    let (text, pages) = b.finish();
    Ok(Extracted {
        format: Format::Pptx,
        text,
        pages,
        title: None,
    })
}

/// The slide parts in presentation order (`presentation.xml`'s list, through its
/// relationships), else by the number in their names.
fn pptx_slide_order(zip: &mut Archive<'_>) -> Result<Vec<String>, Failure> {
    let mut targets: HashMap<String, String> = HashMap::new();
    if let Some(rels) = zip.optional("ppt/_rels/presentation.xml.rels")? {
        each_event(&rels, |ev| {
            if let Xml::Start(e) = ev
                && local(e) == "Relationship"
                && let (Some(id), Some(target)) = (attr(e, "Id"), attr(e, "Target"))
            {
                let target = target.trim_start_matches('/');
                let path = if target.starts_with("ppt/") {
                    target.to_owned()
                } else {
                    format!("ppt/{target}")
                };
                targets.insert(id, path);
            }
        })
        .unwrap_or_else(|e| tracing::debug!("slide relationships damaged: {e}"));
    }
    let mut order = Vec::new();
    // Damaged parts that give the order leave the slides in the order of their names.
    let listed = match zip.optional("ppt/presentation.xml")? {
        Some(pres) => each_event(&pres, |ev| {
            if let Xml::Start(e) = ev
                && local(e) == "sldId"
                && let Some(t) = attr(e, "id").and_then(|id| targets.get(&id))
            {
                order.push(t.clone());
            }
        })
        .is_ok(),
        None => false,
    };
    if !listed || order.is_empty() {
        let mut slides: Vec<(u32, String)> = zip
            .names()
            .into_iter()
            .filter_map(|n| {
                let k = n
                    .strip_prefix("ppt/slides/slide")?
                    .strip_suffix(".xml")?
                    .parse()
                    .ok()?;
                Some((k, n))
            })
            .collect();
        slides.sort();
        order = slides.into_iter().map(|(_, n)| n).collect();
    }
    Ok(order)
}

/// EPUB: the spine's XHTML chapters in reading order, each through the HTML extractor.
pub(crate) fn epub(bytes: &[u8], limits: &Limits) -> Result<Extracted, Failure> {
    let mut zip = Archive::open(bytes, limits, "EPUB")?;
    // Encrypted fonts are only obfuscated (IDPF font mangling); encrypted chapters are DRM.
    if let Some(enc) = zip.optional("META-INF/encryption.xml")? {
        let mut chapters = false;
        each_event(&enc, |ev| {
            if let Xml::Start(e) = ev
                && local(e) == "CipherReference"
                && let Some(uri) = attr(e, "URI")
            {
                let uri = uri.to_ascii_lowercase();
                chapters |= [".xhtml", ".html", ".htm", ".xml"]
                    .iter()
                    .any(|x| uri.ends_with(x));
            }
        })?;
        if chapters {
            return Err(Failure::Encrypted);
        }
    }
    let container = zip.required("META-INF/container.xml", "EPUB")?;
    let mut opf_path = None;
    each_event(&container, |ev| {
        if let Xml::Start(e) = ev
            && local(e) == "rootfile"
            && opf_path.is_none()
        {
            opf_path = attr(e, "full-path");
        }
    })?;
    let opf_path =
        opf_path.ok_or_else(|| Failure::Unreadable("not an EPUB: no rootfile".into()))?;
    let opf = zip.required(&opf_path, "EPUB")?;
    let base = opf_path.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
    let mut manifest: HashMap<String, String> = HashMap::new();
    let mut spine: Vec<String> = Vec::new();
    let mut title = String::new();
    let mut in_title = false;
    each_event(&opf, |ev| match ev {
        Xml::Start(e) => match e.local_name().into_inner() {
            "item" => {
                if let (Some(id), Some(href)) = (attr(e, "id"), attr(e, "href")) {
                    manifest.insert(id, href);
                }
            }
            "itemref" => {
                if let Some(id) = attr(e, "idref") {
                    spine.push(id);
                }
            }
            "title" => in_title = title.is_empty(),
            _ => {}
        },
        Xml::End("title") => in_title = false,
        Xml::End(_) => {}
        Xml::Text(t) if in_title => title.push_str(t),
        Xml::Text(_) => {}
    })?;
    let mut b = TextBuilder::default();
    for id in &spine {
        let Some(href) = manifest.get(id) else {
            continue;
        };
        let href = href
            .split('#')
            .next()
            .unwrap_or_default()
            .replace("%20", " ");
        let path = if base.is_empty() {
            href
        } else {
            format!("{base}/{href}")
        };
        let Some(chapter) = zip.optional(&path)? else {
            tracing::debug!(%path, "EPUB spine item missing or damaged");
            continue;
        };
        let doc = scraper::Html::parse_document(&String::from_utf8_lossy(&chapter));
        html::walk(&doc, &mut b);
    }
    let (text, _) = b.finish();
    let title = super::squash(&title);
    Ok(Extracted {
        format: Format::Epub,
        text,
        pages: Vec::new(),
        title: (!title.is_empty()).then_some(title),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in members {
            z.start_file(*name, opts).unwrap();
            z.write_all(content).unwrap();
        }
        z.finish().unwrap();
        buf.into_inner()
    }

    const DOC: &str = r#"<w:document xmlns:w="w"><w:body><w:p><w:pPr><w:pStyle w:val="H1"/></w:pPr><w:r><w:t>Kilns</w:t></w:r></w:p><w:p><w:r><w:t>Cone 6 is 1220 degrees.</w:t></w:r></w:p></w:body></w:document>"#;
    const STYLES: &str = r#"<w:styles xmlns:w="w"><w:style w:styleId="H1"><w:name w:val="heading 1"/></w:style></w:styles>"#;

    #[test]
    fn a_truncated_docx_gives_the_parts_before_the_cut() {
        // A last part that does not compress, so a cut can fall inside it.
        let mut x = 1u32;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 24) as u8
            })
            .collect();
        let bytes = zip_of(&[
            ("word/document.xml", DOC.as_bytes()),
            ("word/styles.xml", STYLES.as_bytes()),
            ("docProps/thumbnail.bin", &noise),
        ]);
        let whole = docx(&bytes, &Limits::default()).unwrap();
        assert_eq!(whole.text, "# Kilns\n\nCone 6 is 1220 degrees.");
        // Cut inside the last member: the directory is gone, the first two parts are whole.
        let cut = &bytes[..bytes.len() - 600];
        assert_eq!(docx(cut, &Limits::default()).unwrap().text, whole.text);
        // Cut inside the document itself: nothing to read.
        assert!(matches!(
            docx(&bytes[..60], &Limits::default()),
            Err(Failure::Unreadable(_))
        ));
    }

    #[test]
    fn damaged_styles_cost_only_the_headings() {
        let bytes = zip_of(&[
            ("word/styles.xml", STYLES.as_bytes()),
            ("word/document.xml", DOC.as_bytes()),
        ]);
        // Corrupt the styles' compressed data (it follows its 30-byte header and name), so
        // its checksum fails.
        let mut damaged = bytes.clone();
        let start = 30 + "word/styles.xml".len();
        for b in &mut damaged[start + 4..start + 12] {
            *b ^= 0x5a;
        }
        let e = docx(&damaged, &Limits::default()).unwrap();
        assert_eq!(e.text, "Kilns\n\nCone 6 is 1220 degrees.");
    }

    #[test]
    fn tabs_separate_words_and_drawn_twice_is_read_once() {
        let doc = r#"<w:document xmlns:w="w" xmlns:mc="mc"><w:body>
            <w:p><w:r><w:t>A</w:t><w:tab/><w:t>B</w:t></w:r></w:p>
            <w:p><w:r><mc:AlternateContent><mc:Choice><w:txbxContent><w:p><w:r><w:t>Case closed.</w:t></w:r></w:p></w:txbxContent></mc:Choice>
              <mc:Fallback><w:txbxContent><w:p><w:r><w:t>Case closed.</w:t></w:r></w:p></w:txbxContent></mc:Fallback></mc:AlternateContent><w:t>Outer</w:t></w:r></w:p>
            </w:body></w:document>"#;
        let bytes = zip_of(&[("word/document.xml", doc.as_bytes())]);
        assert_eq!(
            docx(&bytes, &Limits::default()).unwrap().text,
            "A B\n\nCase closed.\n\nOuter"
        );
    }

    #[test]
    fn odt_tabs_are_spaces_and_deleted_text_is_not_read() {
        let content = r#"<office:document-content xmlns:office="o" xmlns:text="t"><office:body><office:text>
            <text:tracked-changes><text:changed-region><text:deletion><text:p>deleted</text:p></text:deletion></text:changed-region></text:tracked-changes>
            <text:p>A<text:tab/>B</text:p></office:text></office:body></office:document-content>"#;
        let bytes = zip_of(&[("content.xml", content.as_bytes())]);
        assert_eq!(odt(&bytes, &Limits::default()).unwrap().text, "A B");
    }
}

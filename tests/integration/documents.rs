//! Documents as people have them: PDF, HTML, DOCX, ODT, PPTX and EPUB read through extraction
//! workers, and files that crash or hang a worker costing only themselves.

use std::io::Write;
use std::path::Path;

use crate::util::*;

/// A zip of `(name, content)` members, deflated.
fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in members {
            z.start_file(*name, opts).unwrap();
            z.write_all(content).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

fn docx(body: &str) -> Vec<u8> {
    let styles = r#"<?xml version="1.0"?><w:styles xmlns:w="w"><w:style w:styleId="Heading1"><w:name w:val="heading 1"/></w:style><w:style w:styleId="Berschrift2"><w:name w:val="heading 2"/></w:style></w:styles>"#;
    let doc = format!(
        r#"<?xml version="1.0"?><w:document xmlns:w="w"><w:body>{body}</w:body></w:document>"#
    );
    zip_of(&[
        ("word/styles.xml", styles.as_bytes()),
        ("word/document.xml", doc.as_bytes()),
    ])
}

fn docx_para(style: Option<&str>, text: &str) -> String {
    let p = style.map_or(String::new(), |s| {
        format!(r#"<w:pPr><w:pStyle w:val="{s}"/></w:pPr>"#)
    });
    format!(r#"<w:p>{p}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>"#)
}

fn odt() -> Vec<u8> {
    let content = r#"<?xml version="1.0"?><office:document-content xmlns:office="o" xmlns:text="t"><office:body><office:text><text:h text:outline-level="1">Harbour</text:h><text:p>The ferry leaves at noon<text:s text:c="2"/>sharp &amp; returns at six.</text:p></office:text></office:body></office:document-content>"#;
    zip_of(&[
        ("mimetype", b"application/vnd.oasis.opendocument.text"),
        ("content.xml", content.as_bytes()),
    ])
}

fn pptx() -> Vec<u8> {
    let slide = |title: &str, body: &str| {
        format!(
            r#"<?xml version="1.0"?><p:sld xmlns:p="p" xmlns:a="a"><p:cSld><p:spTree><p:sp><p:nvSpPr><p:nvPr><p:ph type="title"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>{title}</a:t></a:r></a:p></p:txBody></p:sp><p:sp><p:txBody><a:p><a:r><a:t>{body}</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#
        )
    };
    let s1 = slide("Quarterly plan", "Hire two welders.");
    let s2 = slide("Budget", "The kiln costs nine thousand euros.");
    zip_of(&[
        ("ppt/slides/slide1.xml", s1.as_bytes()),
        ("ppt/slides/slide2.xml", s2.as_bytes()),
    ])
}

fn epub() -> Vec<u8> {
    let container = r#"<?xml version="1.0"?><container><rootfiles><rootfile full-path="OEBPS/content.opf"/></rootfiles></container>"#;
    let opf = r#"<?xml version="1.0"?><package><metadata><dc:title xmlns:dc="dc">Sea Stories</dc:title></metadata><manifest><item id="c1" href="ch1.xhtml"/><item id="c2" href="ch2.xhtml"/></manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>"#;
    let ch1 = "<html><body><h1>The Storm</h1><p>The mast snapped at midnight.</p></body></html>";
    let ch2 = "<html><body><h1>Landfall</h1><p>They reached the lagoon at dawn.</p></body></html>";
    zip_of(&[
        ("mimetype", b"application/epub+zip"),
        ("META-INF/container.xml", container.as_bytes()),
        ("OEBPS/content.opf", opf.as_bytes()),
        ("OEBPS/ch1.xhtml", ch1.as_bytes()),
        ("OEBPS/ch2.xhtml", ch2.as_bytes()),
    ])
}

/// A PDF with one line of text on each page, cross-reference offsets computed.
fn pdf(pages: &[&str]) -> Vec<u8> {
    let n = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, then a page and its contents per page.
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    for (i, text) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R /Resources << /Font << /F1 3 0 R >> >> >>",
            5 + 2 * i
        ));
        let stream = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
        objects.push(format!(
            "<< /Length {} >>\nstream\n{stream}\nendstream",
            stream.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn extract_json(data: &Path, file: &Path) -> serde_json::Value {
    json_of(&run_ok(sovrag(data).arg("extract").arg(file).arg("--json")))
}

#[test]
fn each_format_is_extracted_with_its_structure() {
    let data = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    std::fs::write(
        d.join("page.html"),
        "<html><head><title>Kiln notes</title><script>var x = 'no';</script></head><body><h1>Firing</h1><p>Cone 6 needs <b>1220 degrees</b>.</p><ul><li>Load</li><li>Fire</li></ul></body></html>",
    )
    .unwrap();
    let body = [
        docx_para(Some("Heading1"), "Welding"),
        docx_para(Some("Berschrift2"), "Safety"),
        docx_para(None, "Wear the visor &amp; gloves."),
    ]
    .concat();
    std::fs::write(d.join("manual.docx"), docx(&body)).unwrap();
    std::fs::write(d.join("ferry.odt"), odt()).unwrap();
    std::fs::write(d.join("plan.pptx"), pptx()).unwrap();
    std::fs::write(d.join("sea.epub"), epub()).unwrap();
    // As WordPad writes it: tables, metadata, a Windows-1252 byte, a heading by outline level.
    std::fs::write(
        d.join("log.rtf"),
        "{\\rtf1\\ansi\\ansicpg1252{\\fonttbl{\\f0 Arial;}}{\\info{\\author Ann}}\n\
         {\\pard\\outlinelevel0 Glaze log\\par}\n\
         {\\pard The celadon crazed at caf\\'e9 temperature.\\par}\n\
         \\trowd\\cellx1000\\cellx2000\\pard\\intbl Cone\\cell 6\\cell\\row}",
    )
    .unwrap();
    std::fs::write(
        d.join("report.pdf"),
        pdf(&[
            "The lighthouse keeper trims the wick.",
            "The pelican eats at noon.",
        ]),
    )
    .unwrap();

    let html = extract_json(data.path(), &d.join("page.html"));
    assert_eq!(html["format"], "html");
    assert_eq!(html["title"], "Kiln notes");
    assert_eq!(
        html["text"],
        "# Firing\n\nCone 6 needs 1220 degrees.\n\n- Load\n\n- Fire"
    );
    let docx = extract_json(data.path(), &d.join("manual.docx"));
    assert_eq!(
        docx["text"], "# Welding\n\n## Safety\n\nWear the visor & gloves.",
        "{docx}"
    );
    let rtf = extract_json(data.path(), &d.join("log.rtf"));
    assert_eq!(rtf["format"], "rtf", "{rtf}");
    assert_eq!(
        rtf["text"], "# Glaze log\n\nThe celadon crazed at café temperature.\n\nCone | 6",
        "{rtf}"
    );
    let odt = extract_json(data.path(), &d.join("ferry.odt"));
    assert_eq!(
        odt["text"], "# Harbour\n\nThe ferry leaves at noon sharp & returns at six.",
        "{odt}"
    );
    let pptx = extract_json(data.path(), &d.join("plan.pptx"));
    assert_eq!(
        pptx["text"],
        "## Quarterly plan\n\nHire two welders.\n\n## Budget\n\nThe kiln costs nine thousand euros."
    );
    assert_eq!(pptx["page_name"], "slide");
    let starts: Vec<u64> = pptx["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start_line"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![1, 5]);
    let epub = extract_json(data.path(), &d.join("sea.epub"));
    assert_eq!(epub["title"], "Sea Stories");
    assert_eq!(
        epub["text"],
        "# The Storm\n\nThe mast snapped at midnight.\n\n# Landfall\n\nThey reached the lagoon at dawn."
    );
    let pdf = extract_json(data.path(), &d.join("report.pdf"));
    let text = pdf["text"].as_str().unwrap();
    assert!(text.contains("lighthouse keeper trims the wick"), "{pdf}");
    assert_eq!(pdf["pages"].as_array().unwrap().len(), 2, "{pdf}");
    let page2 = pdf["pages"][1]["start_line"].as_u64().unwrap() as usize;
    let line = text.split('\n').nth(page2 - 1).unwrap();
    assert!(line.contains("pelican"), "page 2 starts at its text: {pdf}");

    // The plain listing numbers lines and marks pages.
    let out = run_ok(sovrag(data.path()).arg("extract").arg(d.join("report.pdf")));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("── page 2 ──"), "{listing}");
    assert!(listing.contains("    1  "), "{listing}");

    // Indexed like any other file, found by what the document says, at its page or section.
    let report = json_of(&run_ok(
        sovrag(data.path()).arg("index").arg(d).arg("--json"),
    ));
    assert_eq!(report["indexed"], 7, "{report}");
    assert_eq!(report["skipped"], 0, "{report}");
    assert_eq!(report["pages"], 2, "PDF pages read: {report}");
    for (q, file, page, section) in [
        (
            "visor and gloves for welding",
            "manual.docx",
            None,
            Some("Welding › Safety"),
        ),
        ("kiln cost in euros", "plan.pptx", Some(2), Some("Budget")),
        ("pelican eats", "report.pdf", Some(2), None),
        ("ferry leaves", "ferry.odt", None, Some("Harbour")),
        ("celadon crazed", "log.rtf", None, Some("Glaze log")),
        ("mast snapped", "sea.epub", None, Some("The Storm")),
        (
            "cone 6 firing temperature",
            "page.html",
            None,
            Some("Firing"),
        ),
    ] {
        let hits = json_of(&run_ok(
            sovrag(data.path()).args(["query", q, "--json", "--k", "1"]),
        ));
        let top = &hits["hits"][0];
        assert!(
            top["path"].as_str().unwrap_or_default().ends_with(file),
            "{q}: {hits}"
        );
        assert_eq!(top["page"].as_u64(), page, "{q}: {hits}");
        assert_eq!(top["section"].as_str(), section, "{q}: {hits}");
    }
    // `verify` finds every chunk in the extracted text at its recorded lines.
    let v = json_of(&run_ok(
        sovrag(data.path()).arg("verify").arg(d).arg("--json"),
    ));
    assert_eq!(v["files"], 7, "{v}");
    assert_eq!(v["violations"], serde_json::json!([]), "{v}");
    // The CLI says where, the way a reader would.
    let out = run_ok(sovrag(data.path()).args(["query", "pelican eats", "--k", "1"]));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("report.pdf p. 2, lines "), "{listing}");
    // Nothing of the script made it in.
    let hits = json_of(&run_ok(
        sovrag(data.path()).args(["query", "var x", "--json"]),
    ));
    assert!(
        !hits.to_string().contains("var x = "),
        "script text was indexed: {hits}"
    );
}

#[test]
fn a_worker_that_crashes_or_hangs_costs_only_its_file() {
    for (fault, reason) in [
        ("crash", "crash"),
        ("hang", "timeout"),
        ("oom", "too large"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        std::fs::write(
            d.join("notes.md"),
            "# Owls\n\nThe barn owl hunts at dusk.\n",
        )
        .unwrap();
        // Workers serve many files: the one that fails on page.html is replaced, and the
        // files before and after it (in name order) are read.
        std::fs::write(d.join("a.html"), "<p>The kestrel hovers.</p>").unwrap();
        std::fs::write(d.join("page.html"), "<p>The heron waits.</p>").unwrap();
        std::fs::write(d.join("z.html"), "<p>The swift never lands.</p>").unwrap();
        let out = run_ok(
            sovrag(data.path())
                .args(["--extract-timeout", "2", "index"])
                .arg(d)
                .env("SOVRAG_TEST_EXTRACT_FAULT", format!("{fault}:page.html")),
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("indexed 3 files"), "{fault}: {summary}");
        assert!(summary.contains("1 skipped"), "{fault}: {summary}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "{fault}: {stderr}");
        let hits = json_of(&run_ok(
            sovrag(data.path()).args(["query", "barn owl", "--json", "--k", "1"]),
        ));
        assert!(
            hits["hits"][0]["path"]
                .as_str()
                .unwrap()
                .ends_with("notes.md"),
            "{hits}"
        );
        // A Markdown hit carries its heading path, as a document's does.
        assert_eq!(hits["hits"][0]["section"], "Owls", "{hits}");
        for (q, file) in [
            ("kestrel hovers", "a.html"),
            ("swift never lands", "z.html"),
        ] {
            let hits = json_of(&run_ok(
                sovrag(data.path()).args(["query", q, "--json", "--k", "1"]),
            ));
            let path = hits["hits"][0]["path"].as_str().unwrap_or_default();
            assert!(path.ends_with(file), "{fault}: {q}: {hits}");
        }
    }
}

#[test]
fn broken_and_bomb_documents_are_refused_with_a_reason() {
    let data = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    // A DOCX whose document decompresses past the 512 MB cap, from about half a megabyte.
    let zeros = vec![b' '; 520 << 20];
    let bomb = zip_of(&[("word/document.xml", &zeros)]);
    drop(zeros);
    assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
    std::fs::write(d.join("bomb.docx"), bomb).unwrap();
    std::fs::write(d.join("broken.pdf"), b"%PDF-1.7\nthis is not a pdf").unwrap();
    std::fs::write(d.join("empty.docx"), docx("")).unwrap();

    let run = |name: &str| {
        sovrag(data.path())
            .arg("extract")
            .arg(d.join(name))
            .output()
            .unwrap()
    };
    std::fs::write(d.join("link.pdf"), b"../pdfs/a_broken_symlink.pdf").unwrap();
    for (name, reason) in [
        ("bomb.docx", "too large"),
        ("broken.pdf", "unreadable"),
        ("link.pdf", "unreadable: not a PDF file"),
        ("empty.docx", "no text"),
    ] {
        let out = run(name);
        assert!(!out.status.success(), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(reason), "{name}: {err}");
    }

    std::fs::write(
        d.join("notes.md"),
        "# Owls\n\nThe barn owl hunts at dusk.\n",
    )
    .unwrap();
    // Several files at once: a JSON line each, in order, the broken ones with their reason.
    let out = sovrag(data.path())
        .args(["extract", "--json"])
        .args(["bomb.docx", "notes.md", "broken.pdf"].map(|n| d.join(n)))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["reason"], "too large", "{lines:?}");
    assert!(
        lines[1]["text"].as_str().unwrap().contains("barn owl"),
        "{lines:?}"
    );
    assert_eq!(lines[2]["reason"], "unreadable", "{lines:?}");

    // Indexing goes on past them, and counts them by reason.
    let report = json_of(&run_ok(
        sovrag(data.path()).arg("index").arg(d).arg("--json"),
    ));
    assert_eq!(report["indexed"], 1, "{report}");
    assert_eq!(report["skipped"], 4, "{report}");
    assert_eq!(
        report["skipped_by_reason"],
        serde_json::json!({"too large": 1, "unreadable": 2, "no text layer": 1}),
        "{report}"
    );
    // A later `status` lists each one with its reason.
    let status = json_of(&run_ok(sovrag(data.path()).args(["status", "--json"])));
    assert_eq!(status["problem_count"], 4, "{status}");
    let bomb = d.join("bomb.docx").to_string_lossy().into_owned();
    assert!(
        status["problems"][&bomb]
            .as_str()
            .unwrap_or_default()
            .contains("too large"),
        "{status}"
    );
}

#[test]
fn citations_carry_the_page_and_open_the_indexed_document() {
    let data = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    std::fs::write(
        d.join("almanac.pdf"),
        pdf(&[
            "The harbour master keeps the tide tables.",
            "The lighthouse lamp is cleaned every Sunday.",
            "The ferry to Skellig leaves at seven in the morning.",
        ]),
    )
    .unwrap();
    let notes = d.join("notes.md");
    std::fs::write(
        &notes,
        "# Birds\n\nThe barn owl hunts at dusk.\n\nThe heron waits.\n",
    )
    .unwrap();
    run_ok(sovrag(data.path()).arg("index").arg(d));
    let server = Server::start(data.path(), &[]);

    let (status, answer) = server.post(
        "/v1/ask",
        &serde_json::json!({"question": "When does the ferry to Skellig leave?", "k": 3}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["abstained"], false, "{answer}");
    let cite = answer["citations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("almanac.pdf"))
        .unwrap_or_else(|| panic!("no citation of the PDF: {answer}"));
    assert_eq!(cite["page"], 3, "{answer}");

    // The citation's document, as indexed: the same text `extract` shows, with its pages,
    // and the cited span at the cited lines.
    let id = cite["doc_id"].as_str().unwrap();
    let (status, doc) = server.get(&format!("/v1/documents/{id}")).unwrap();
    assert_eq!(status, 200, "{doc}");
    let extracted = extract_json(data.path(), &d.join("almanac.pdf"));
    assert_eq!(doc["text"], extracted["text"]);
    assert_eq!(doc["pages"], extracted["pages"]);
    assert_eq!(doc["format"], "pdf");
    let lines: Vec<&str> = doc["text"].as_str().unwrap().split('\n').collect();
    let (s, e) = (
        cite["start_line"].as_u64().unwrap() as usize,
        cite["end_line"].as_u64().unwrap() as usize,
    );
    assert!(lines[s - 1..e].join("\n").contains("Skellig"), "{doc}");
    for bad in ["0123456789abcdef", "not-an-id", "..%2F..%2Fetc"] {
        let (status, body) = server.get(&format!("/v1/documents/{bad}")).unwrap();
        assert_eq!(status, 404, "{bad}: {body}");
    }

    // A text file changed since indexing: its indexed text comes back from the chunks, at
    // the lines citations name.
    let hits = json_of(&run_ok(
        sovrag(data.path()).args(["query", "barn owl", "--json", "--k", "1"]),
    ));
    let id = hits["hits"][0]["doc_id"].as_str().unwrap().to_owned();
    let (_, before) = server.get(&format!("/v1/documents/{id}")).unwrap();
    assert_eq!(before.get("reassembled"), None, "{before}");
    assert_eq!(before["headings"][0]["title"], "Birds", "{before}");
    std::fs::write(&notes, "# Fish\n\nNothing about birds now.\n").unwrap();
    let (_, after) = server.get(&format!("/v1/documents/{id}")).unwrap();
    assert_eq!(after["reassembled"], true, "{after}");
    let text = after["text"].as_str().unwrap();
    assert_eq!(
        text.split('\n').nth(2),
        Some("The barn owl hunts at dusk."),
        "{after}"
    );
}

//! PDF text layers, page by page, through `pdf_oxide` (pure Rust).
//!
//! A page that fails to read is left empty and the others are kept: a broken object on
//! page 40 should not cost the other 199 pages. A PDF encrypted with the empty user password
//! (common: "no copying" flags) is read; one that needs a real password is `Encrypted`.

use pdf_oxide::converters::ConversionOptions;
use pdf_oxide::document::PdfDocument;
use pdf_oxide::error::Error as PdfError;

use super::{Extracted, Failure, Format, TextBuilder};

pub(crate) fn extract(bytes: &[u8]) -> Result<Extracted, Failure> {
    // Readers accept the header anywhere in the first KB (after junk some writers prepend).
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(Failure::Unreadable(
            "not a PDF file (no %PDF- header)".into(),
        ));
    }
    let doc = PdfDocument::from_bytes(bytes.to_vec()).map_err(|e| match e {
        PdfError::EncryptedPdf => Failure::Encrypted,
        e => Failure::Unreadable(format!("not a readable PDF: {e}")),
    })?;
    if doc.is_encrypted() && !doc.authenticate(b"").unwrap_or(false) {
        return Err(Failure::Encrypted);
    }
    let pages = doc
        .page_count()
        .map_err(|e| Failure::Unreadable(format!("no page tree: {e}")))?;
    // No table detection: a table's cells still come out row by row, only not padded into
    // aligned columns, which the index has no use for; detection is a fifth of the time.
    let options = ConversionOptions {
        extract_tables: false,
        ..ConversionOptions::default()
    };
    let mut b = TextBuilder::default();
    let mut failed = 0usize;
    for i in 0..pages {
        b.page();
        match doc.extract_text_with_options(i, &options) {
            Ok(text) => b.paragraph(&text),
            Err(PdfError::EncryptedPdf) => return Err(Failure::Encrypted),
            Err(e) => {
                failed += 1;
                tracing::debug!(page = i + 1, "PDF page unreadable: {e}");
            }
        }
    }
    if failed > 0 {
        tracing::info!(
            failed,
            pages,
            "PDF pages without readable text were left empty"
        );
    }
    let (text, pages) = b.finish();
    Ok(Extracted {
        format: Format::Pdf,
        text,
        pages,
        title: None,
    })
}

//! The shape of a chunk in each store.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use tantivy::schema::{
    Field as TField, INDEXED, IndexRecordOption, STORED, STRING, Schema as TSchema,
    TextFieldIndexing, TextOptions,
};

use crate::EMBEDDING_DIM;

/// The LanceDB table's Arrow schema.
pub fn arrow() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("start_line", DataType::UInt32, false),
        Field::new("end_line", DataType::UInt32, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                EMBEDDING_DIM as i32,
            ),
            false,
        ),
    ]))
}

/// The tantivy index's fields.
#[derive(Clone, Copy)]
pub struct TextFields {
    pub chunk_id: TField,
    pub doc_id: TField,
    pub path: TField,
    pub title: TField,
    pub start_line: TField,
    pub end_line: TField,
    pub text: TField,
}

/// English stemming ("watching" finds "watch").
pub const ANALYZER: &str = "en_stem";

/// A text field analysed with [`ANALYZER`], with frequencies and positions: the query's
/// term pairs are phrase queries (`text::dependence_clauses`).
fn stemmed() -> TextOptions {
    TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    )
}

pub fn tantivy() -> (TSchema, TextFields) {
    let mut b = TSchema::builder();
    let stemmed = stemmed();
    let fields = TextFields {
        chunk_id: b.add_text_field("chunk_id", STRING | STORED),
        doc_id: b.add_text_field("doc_id", STRING | STORED),
        // Indexed raw so a document's chunks can be deleted by path.
        path: b.add_text_field("path", STRING | STORED),
        title: b.add_text_field("title", stemmed.clone()),
        start_line: b.add_u64_field("start_line", STORED | INDEXED),
        end_line: b.add_u64_field("end_line", STORED),
        text: b.add_text_field("text", stemmed | STORED),
    };
    (b.build(), fields)
}

/// The document index's fields.
#[derive(Clone, Copy)]
pub struct DocFields {
    pub doc_id: TField,
    pub path: TField,
    pub text: TField,
}

/// One entry per document: title and whole text in one field, as BM25 is usually run.
pub fn tantivy_docs() -> (TSchema, DocFields) {
    let mut b = TSchema::builder();
    let fields = DocFields {
        doc_id: b.add_text_field("doc_id", STRING | STORED),
        path: b.add_text_field("path", STRING | STORED),
        text: b.add_text_field("text", stemmed()),
    };
    (b.build(), fields)
}

//! The LanceDB side: one table of chunks with their vectors.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array};
use futures::TryStreamExt;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{CompactionOptions, OptimizeAction};
use lancedb::{DistanceType, Table};

use crate::{ChunkRecord, EMBEDDING_DIM, Error, Hit, Result, schema};

const TABLE: &str = "chunks";
/// More fragments than this and [`VectorStore::compact`] merges them.
const MAX_FRAGMENTS: usize = 16;
/// Old table versions are kept this long, for readers in other processes that opened one.
const KEEP_VERSIONS: lancedb::table::Duration = lancedb::table::Duration::minutes(10);

pub struct VectorStore {
    table: Table,
}

/// A string literal for a LanceDB (DataFusion SQL) predicate.
fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl VectorStore {
    pub async fn open(dir: &Path) -> Result<Self> {
        let uri = dir.to_str().ok_or_else(|| {
            Error::Invalid(format!("data dir {} is not valid UTF-8", dir.display()))
        })?;
        let db = lancedb::connect(uri).execute().await?;
        let names = db.table_names().execute().await?;
        let table = if names.iter().any(|n| n == TABLE) {
            db.open_table(TABLE).execute().await?
        } else {
            db.create_empty_table(TABLE, schema::arrow())
                .execute()
                .await?
        };
        Ok(VectorStore { table })
    }

    /// The table version: every write makes a new one.
    pub async fn version(&self) -> Result<u64> {
        Ok(self.table.version().await?)
    }

    /// Merges small fragments and drops deleted rows, if there are enough of them to matter,
    /// then deletes the files of versions older than [`KEEP_VERSIONS`]. Returns whether it
    /// compacted.
    ///
    /// Every write adds a fragment, and a flat vector search pays per fragment: a watched
    /// folder that gets many small edits would otherwise get slower and larger forever.
    pub async fn compact(&self) -> Result<bool> {
        let stats = self.table.stats().await?;
        let fragments = stats.fragment_stats.num_fragments;
        let deleted = stats.num_deleted_rows.unwrap_or(0);
        if fragments <= MAX_FRAGMENTS && deleted * 10 <= stats.num_rows.max(1) {
            return Ok(false);
        }
        self.table
            .optimize(OptimizeAction::Compact {
                options: CompactionOptions::default(),
                remap_options: None,
            })
            .await?;
        self.table
            .optimize(OptimizeAction::Prune {
                older_than: Some(KEEP_VERSIONS),
                delete_unverified: None,
                error_if_tagged_old_versions: None,
            })
            .await?;
        tracing::debug!(
            "compacted the vector store: {fragments} fragments, {deleted} deleted rows"
        );
        Ok(true)
    }

    pub async fn count(&self) -> Result<usize> {
        Ok(self.table.count_rows(None).await?)
    }

    /// Removes every chunk of `paths`, then adds `chunks`.
    pub async fn replace(&self, paths: &[&str], chunks: &[ChunkRecord]) -> Result<()> {
        // Bounded IN lists keep each predicate a reasonable size for DataFusion.
        for group in paths.chunks(256) {
            let list: Vec<String> = group.iter().map(|p| sql_str(p)).collect();
            self.table
                .delete(&format!("path IN ({})", list.join(", ")))
                .await?;
        }
        if !chunks.is_empty() {
            self.table.add(to_batch(chunks)?).execute().await?;
        }
        Ok(())
    }

    pub async fn documents(&self) -> Result<HashMap<String, String>> {
        self.documents_where(None).await
    }

    /// `path → content_hash` of the documents at `paths` that are stored.
    pub async fn documents_at(&self, paths: &[&str]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for group in paths.chunks(256) {
            let list: Vec<String> = group.iter().map(|v| sql_str(v)).collect();
            let filter = format!("path IN ({})", list.join(", "));
            out.extend(self.documents_where(Some(filter)).await?);
        }
        Ok(out)
    }

    async fn documents_where(&self, filter: Option<String>) -> Result<HashMap<String, String>> {
        let mut query = self
            .table
            .query()
            .select(Select::columns(&["path", "content_hash"]));
        if let Some(f) = filter {
            query = query.only_if(f);
        }
        let batches: Vec<RecordBatch> = query.execute().await?.try_collect().await?;
        let mut out = HashMap::new();
        for b in &batches {
            let paths = string_col(b, "path")?;
            let hashes = string_col(b, "content_hash")?;
            for i in 0..b.num_rows() {
                out.insert(paths.value(i).to_string(), hashes.value(i).to_string());
            }
        }
        Ok(out)
    }

    /// Every chunk, for rebuilding the text index.
    pub async fn all_chunks(&self) -> Result<Vec<ChunkRecord>> {
        self.chunks_where(None).await
    }

    /// Chunks stored under any of `paths` or from a file with any of `hashes`.
    pub async fn chunks_of(&self, paths: &[&str], hashes: &[&str]) -> Result<Vec<ChunkRecord>> {
        let mut out = Vec::new();
        for (column, values) in [("path", paths), ("content_hash", hashes)] {
            for group in values.chunks(256) {
                let list: Vec<String> = group.iter().map(|v| sql_str(v)).collect();
                let filter = format!("{column} IN ({})", list.join(", "));
                out.extend(self.chunks_where(Some(filter)).await?);
            }
        }
        Ok(out)
    }

    /// Every chunk of the document `doc_id`, in order.
    pub async fn chunks_of_document(&self, doc_id: &str) -> Result<Vec<ChunkRecord>> {
        let mut chunks = self
            .chunks_where(Some(format!("doc_id = {}", sql_str(doc_id))))
            .await?;
        chunks.sort_by_key(|c| (c.start_line, c.end_line));
        Ok(chunks)
    }

    async fn chunks_where(&self, filter: Option<String>) -> Result<Vec<ChunkRecord>> {
        let mut query = self.table.query();
        if let Some(f) = filter {
            query = query.only_if(f);
        }
        let batches: Vec<RecordBatch> = query.execute().await?.try_collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            out.extend(records(b)?);
        }
        Ok(out)
    }

    /// Nearest chunks by cosine similarity, best first.
    pub async fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<Hit>> {
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .nearest_to(vector)?
            .distance_type(DistanceType::Cosine)
            .select(Select::columns(&[
                "chunk_id",
                "doc_id",
                "path",
                "start_line",
                "end_line",
                "text",
                "_distance",
            ]))
            .limit(limit)
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut hits = Vec::new();
        for b in &batches {
            let dist = b
                .column_by_name("_distance")
                .ok_or_else(|| Error::Invalid("vector search returned no _distance".into()))?
                .as_primitive::<Float32Type>();
            let (chunk_id, doc_id, path, text) = (
                string_col(b, "chunk_id")?,
                string_col(b, "doc_id")?,
                string_col(b, "path")?,
                string_col(b, "text")?,
            );
            let (start, end) = (u32_col(b, "start_line")?, u32_col(b, "end_line")?);
            for i in 0..b.num_rows() {
                let similarity = 1.0 - dist.value(i);
                hits.push(Hit {
                    location: Default::default(),
                    chunk_id: chunk_id.value(i).to_string(),
                    doc_id: doc_id.value(i).to_string(),
                    path: path.value(i).to_string(),
                    start_line: start.value(i),
                    end_line: end.value(i),
                    text: text.value(i).to_string(),
                    score: similarity,
                    bm25_score: None,
                    vector_score: Some(similarity),
                });
            }
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.chunk_id.cmp(&b.chunk_id))
        });
        Ok(hits)
    }
}

fn string_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| Error::Invalid(format!("vector store: column {name} missing or not text")))
}

fn u32_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a UInt32Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| Error::Invalid(format!("vector store: column {name} missing or not u32")))
}

fn to_batch(chunks: &[ChunkRecord]) -> Result<RecordBatch> {
    let strings = |f: fn(&ChunkRecord) -> &str| -> Arc<dyn Array> {
        Arc::new(StringArray::from_iter_values(chunks.iter().map(f)))
    };
    let flat: Vec<f32> = chunks
        .iter()
        .flat_map(|c| c.vector.iter().copied())
        .collect();
    let vectors = FixedSizeListArray::try_new(
        Arc::new(arrow_schema::Field::new(
            "item",
            arrow_schema::DataType::Float32,
            true,
        )),
        EMBEDDING_DIM as i32,
        Arc::new(Float32Array::from(flat)),
        None,
    )?;
    Ok(RecordBatch::try_new(
        schema::arrow(),
        vec![
            strings(|c| &c.chunk_id),
            strings(|c| &c.doc_id),
            strings(|c| &c.path),
            strings(|c| &c.title),
            Arc::new(UInt32Array::from_iter_values(
                chunks.iter().map(|c| c.start_line),
            )),
            Arc::new(UInt32Array::from_iter_values(
                chunks.iter().map(|c| c.end_line),
            )),
            strings(|c| &c.text),
            strings(|c| &c.content_hash),
            Arc::new(vectors),
        ],
    )?)
}

fn records(b: &RecordBatch) -> Result<Vec<ChunkRecord>> {
    let (chunk_id, doc_id, path, title, text, hash) = (
        string_col(b, "chunk_id")?,
        string_col(b, "doc_id")?,
        string_col(b, "path")?,
        string_col(b, "title")?,
        string_col(b, "text")?,
        string_col(b, "content_hash")?,
    );
    let (start, end) = (u32_col(b, "start_line")?, u32_col(b, "end_line")?);
    let vectors = b
        .column_by_name("vector")
        .and_then(|c| c.as_fixed_size_list_opt())
        .ok_or_else(|| Error::Invalid("vector store: column vector missing".into()))?;
    let values = vectors.values().as_primitive::<Float32Type>();
    Ok((0..b.num_rows())
        .map(|i| {
            let off = vectors.value_offset(i) as usize;
            ChunkRecord {
                chunk_id: chunk_id.value(i).to_string(),
                doc_id: doc_id.value(i).to_string(),
                path: path.value(i).to_string(),
                title: title.value(i).to_string(),
                start_line: start.value(i),
                end_line: end.value(i),
                text: text.value(i).to_string(),
                content_hash: hash.value(i).to_string(),
                vector: values.values()[off..off + EMBEDDING_DIM].to_vec(),
            }
        })
        .collect())
}

//! The LanceDB side: one table of chunks with their vectors.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array};
use futures::TryStreamExt;
use lancedb::index::Index;
use lancedb::index::vector::IvfPqIndexBuilder;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{CompactionOptions, OptimizeAction, OptimizeOptions};
use lancedb::{DistanceType, Table};

use crate::storage::Storage;
use crate::{ChunkRecord, EMBEDDING_DIM, Error, Hit, Result, schema};

const TABLE: &str = "chunks";
/// More fragments than this and [`VectorStore::compact`] merges them.
const MAX_FRAGMENTS: usize = 16;
/// Old table versions are kept this long, for readers in other processes that opened one.
const KEEP_VERSIONS: lancedb::table::Duration = lancedb::table::Duration::minutes(10);

/// The name LanceDB gives the vector column's index.
const VECTOR_INDEX: &str = "vector_idx";
/// IVF partitions an approximate search looks in. The PQ codes sit in memory and are cheap to
/// scan, so probing more partitions costs little: at 1,000,000 chunks on 2 cores, with
/// [`REFINE_FACTOR`] 3, going from 32 to 128 probes took hybrid p50 from 39 to 44 ms and
/// recall@10 against exact search from 0.93 to 0.98 (`sovrag eval --scale-bench`).
const NPROBES: usize = 128;
/// An approximate search ranks this many times `limit` candidates by their compressed
/// vectors, then reranks them by the full vectors: the result's order is exact. The full
/// vectors are read from the Lance files, and that read is most of the vector side's cost, so
/// the factor stays small: at 32 probes 10 cost 52 ms p50 at a million chunks, 3 cost 37 ms.
/// At 128 probes recall was 0.981 at 3, 0.974 at 2, 0.961 at 1, and 0.37 with no refinement:
/// PQ's codes alone order near neighbours poorly. 2 is not enough where passages crowd
/// together: on the tight synthetic clusters of this crate's index test it found 179-189 of
/// the exact 200, against 194-199 at 3.
///
/// IVF-SQ (a byte per dimension, no refine step) was tried in place of IVF-PQ: at 1,000,000
/// chunks its hybrid p50 was 51.6 ms against IVF-PQ's 60.8 on the same machine, but its
/// recall@10 was 0.940 (0.966 on another collection), under the 0.95 this index is held to.
const REFINE_FACTOR: u32 = 3;

/// PQ sub-vectors: [`EMBEDDING_DIM`] / 8.
const SUB_VECTORS: u32 = 48;
/// PQ trains 256 centroids per sub-vector: fewer rows than this cannot train an index.
const MIN_INDEX_ROWS: usize = 256;

/// What [`VectorStore::index_vectors`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexAction {
    /// Nothing: too few rows for an index, or it covers nearly all of them.
    None,
    /// Trained and built the index over every row.
    Built,
    /// Added the rows written since to the existing index (no retraining).
    Extended,
}

pub struct VectorStore {
    table: Table,
}

/// A string literal for a LanceDB (DataFusion SQL) predicate.
fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl VectorStore {
    /// Opens the table at `storage`, creating it if `create` (a writer); a reader finds
    /// none there as an error.
    pub async fn open(storage: &Storage, create: bool) -> Result<Self> {
        let (uri, options) = storage.lance()?;
        let db = lancedb::connect(&uri)
            .storage_options(options)
            .execute()
            .await?;
        let names = db.table_names().execute().await?;
        let table = if names.iter().any(|n| n == TABLE) {
            db.open_table(TABLE).execute().await?
        } else if create {
            db.create_empty_table(TABLE, schema::arrow())
                .execute()
                .await?
        } else {
            return Err(Error::Invalid(format!(
                "no index in {} yet: start its writer first (`sovrag serve --watch …` or `sovrag index …` with the same --data-dir)",
                storage.describe()
            )));
        };
        Ok(VectorStore { table })
    }

    /// `path → content_hash` of every document at an earlier `version` of the table (an
    /// error when its files were pruned); the table is left at its newest version.
    pub async fn documents_at_version(&self, version: u64) -> Result<HashMap<String, String>> {
        let documents = match self.table.checkout(version).await {
            Ok(()) => self.documents().await,
            Err(e) => Err(e.into()),
        };
        self.table.checkout_latest().await?;
        documents
    }

    /// Moves to the newest version another process committed (a replica's read).
    pub async fn checkout_latest(&self) -> Result<()> {
        Ok(self.table.checkout_latest().await?)
    }

    /// Keeps an approximate-nearest-neighbour index (IVF-PQ) over the vectors once the
    /// table holds `min_rows` rows: builds it the first time, later adds the rows written
    /// since when they are over a tenth of the table, and trains it again when they outnumber
    /// the rows in it. Below `min_rows` searches scan every vector, which is exact and fast
    /// enough.
    ///
    /// Rows not in the index yet are still found: LanceDB scans them beside the index.
    pub async fn index_vectors(&self, min_rows: usize) -> Result<IndexAction> {
        let rows = self.count().await?;
        if rows < min_rows.max(MIN_INDEX_ROWS) {
            return Ok(IndexAction::None);
        }
        match self.table.index_stats(VECTOR_INDEX).await? {
            // Added rows join the partitions trained before; once they outnumber the rows
            // those were trained on, the partitions no longer fit the data: train again.
            stats
                if stats
                    .as_ref()
                    .is_none_or(|s| s.num_unindexed_rows > s.num_indexed_rows) =>
            {
                // About sqrt(rows) partitions of a few thousand vectors each (LanceDB's own
                // rule); 48 sub-vectors of 8 dimensions each keep enough of a vector for
                // the refine step to start from the right candidates.
                let partitions = (rows as f64).sqrt().round().clamp(1.0, 4096.0) as u32;
                let builder = IvfPqIndexBuilder::default()
                    .distance_type(DistanceType::Cosine)
                    .num_partitions(partitions)
                    .num_sub_vectors(SUB_VECTORS);
                let started = std::time::Instant::now();
                self.table
                    .create_index(&["vector"], Index::IvfPq(builder))
                    .name(VECTOR_INDEX.to_owned())
                    .replace(true)
                    .execute()
                    .await?;
                tracing::info!(
                    rows,
                    partitions,
                    secs = started.elapsed().as_secs_f64(),
                    retrained = stats.is_some(),
                    "built the vector index"
                );
                Ok(IndexAction::Built)
            }
            Some(stats) if stats.num_unindexed_rows * 10 > rows.max(1) => {
                self.table
                    .optimize(OptimizeAction::Index(OptimizeOptions::default()))
                    .await?;
                tracing::info!(
                    added = stats.num_unindexed_rows,
                    "added new rows to the vector index"
                );
                Ok(IndexAction::Extended)
            }
            _ => Ok(IndexAction::None),
        }
    }

    /// Whether the vectors have an approximate index (see [`Self::index_vectors`]).
    #[cfg(test)]
    pub async fn has_vector_index(&self) -> Result<bool> {
        Ok(self.table.index_stats(VECTOR_INDEX).await?.is_some())
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

    /// Nearest chunks by cosine similarity, best first, as ids and scores: path, lines and
    /// text are left empty for the caller to take from the text index for the hits it keeps.
    ///
    /// Each column selected here is read from the Lance files row by row, a read for each of
    /// `limit` rows scattered over the table. At a million chunks, leaving out path, lines
    /// and text took the vector side of a hybrid search from 54 to 42 ms p50 on 2 cores (and
    /// the vector search alone from 38-43 to 27-29 ms), in runs side by side.
    pub async fn search(&self, vector: &[f32], limit: usize) -> Result<Vec<Hit>> {
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .nearest_to(vector)?
            .distance_type(DistanceType::Cosine)
            // Used only where the index exists; without it the scan is exact.
            .nprobes(NPROBES)?
            .refine_factor(REFINE_FACTOR)
            .select(Select::columns(&["chunk_id", "doc_id", "_distance"]))
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
            let (chunk_id, doc_id) = (string_col(b, "chunk_id")?, string_col(b, "doc_id")?);
            for i in 0..b.num_rows() {
                let similarity = 1.0 - dist.value(i);
                hits.push(Hit {
                    location: Default::default(),
                    chunk_id: chunk_id.value(i).to_string(),
                    doc_id: doc_id.value(i).to_string(),
                    path: String::new(),
                    start_line: 0,
                    end_line: 0,
                    text: String::new(),
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

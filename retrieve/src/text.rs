//! The tantivy side: a BM25 index over the same chunks, derived from the vector store.

use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term,
    directory::MmapDirectory,
};

use crate::fusion::DocScore;
use crate::schema::{self, TextFields};
use crate::{ChunkRecord, Error, Hit, Result};

/// Weight of a match in the document title relative to one in the chunk text.
const TITLE_BOOST: f32 = 1.0;
/// The writer's indexing arena; chunks are small, so the minimum tantivy accepts is plenty.
const WRITER_MEMORY: usize = 32 << 20;
/// Sequential dependence model weights (Metzler & Croft, "A Markov Random Field Model for
/// Term Dependencies", SIGIR 2005): single terms, adjacent query-term pairs in order, and
/// the same pairs within a window. These are the paper's published defaults, used unchanged
/// across TREC collections since; they are not fitted to any question set here.
const SDM_TERM: f32 = 0.85;
const SDM_ORDERED: f32 = 0.10;
const SDM_WINDOW: f32 = 0.05;
/// The window pairs may spread over: the paper's unordered window of 8 positions, as the
/// slop tantivy allows on top of the pair's own distance in the query.
const SDM_SLOP: u32 = 6;
/// Pairs used at most, so a pasted paragraph cannot turn into hundreds of phrase queries.
const SDM_MAX_PAIRS: usize = 24;
/// How the commit payload names the LanceDB version the index matches.
const PAYLOAD_PREFIX: &str = "lance_version=";

/// The index analyzer (`en_stem`) plus Lucene's English stop words. Stop words are dropped
/// from queries only: as query terms they match nearly every chunk and add noise to BM25,
/// while the index keeps them so a later phrase query can still use them.
fn query_analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// One tantivy index on disk, with its reader and (once written) its writer.
struct Tantivy {
    index: Index,
    reader: IndexReader,
    // Taken on the first write, so read-only commands can run beside a serving process.
    writer: Mutex<Option<IndexWriter>>,
    dir: String,
}

impl Tantivy {
    fn open(dir: &Path, schema: tantivy::schema::Schema) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mmap = MmapDirectory::open(dir).map_err(|e| Error::Invalid(e.to_string()))?;
        let index = match Index::open_or_create(mmap, schema.clone()) {
            Ok(index) => index,
            // Written by another version of sovrag with other fields. The index is derived
            // from LanceDB, so start it afresh: the store rebuilds it (no re-embedding).
            Err(tantivy::TantivyError::SchemaError(e)) => {
                tracing::warn!(
                    "text index in {} has another layout ({e}): rebuilding it",
                    dir.display()
                );
                let io = |source| Error::Io {
                    path: dir.display().to_string(),
                    source,
                };
                std::fs::remove_dir_all(dir).map_err(io)?;
                std::fs::create_dir_all(dir).map_err(io)?;
                let mmap = MmapDirectory::open(dir).map_err(|e| Error::Invalid(e.to_string()))?;
                Index::create(mmap, schema, tantivy::IndexSettings::default())?
            }
            Err(e) => return Err(e.into()),
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Tantivy {
            index,
            reader,
            writer: Mutex::new(None),
            dir: dir.display().to_string(),
        })
    }

    fn count(&self) -> usize {
        // Another process may have committed since we last looked.
        let _ = self.reader.reload();
        self.reader.searcher().num_docs() as usize
    }

    fn synced_version(&self) -> Option<u64> {
        self.index
            .load_metas()
            .ok()?
            .payload?
            .strip_prefix(PAYLOAD_PREFIX)?
            .parse()
            .ok()
    }

    /// Drops the writer (waiting for its threads and freeing the directory lock), so the
    /// next write makes a new one.
    ///
    /// `delete_all_documents` needs a new writer: it rewinds the writer's opstamps to those
    /// of the writer's creation rather than of its last commit (quickwit-oss/tantivy#2666),
    /// so on a writer that has deleted since, the documents added after it rank as older than
    /// those deletes, and the next commit applies them to the new documents (a replica's
    /// rebuild lost files it had removed and seen come back).
    fn discard_writer(&self) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Runs `f` on the writer and commits, recording `lance_version` in the same atomic
    /// commit, so a reader can tell whether this index caught up with the vector store.
    fn with_writer<T>(
        &self,
        lance_version: u64,
        f: impl FnOnce(&mut IndexWriter) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| Error::Invalid("text index writer lock poisoned".into()))?;
        if guard.is_none() {
            let w = self.index.writer(WRITER_MEMORY).map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => Error::Locked(self.dir.clone()),
                e => Error::Tantivy(e),
            })?;
            *guard = Some(w);
        }
        let writer = guard.as_mut().expect("writer set above");
        let out = f(writer)?;
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&format!("{PAYLOAD_PREFIX}{lance_version}"));
        commit.commit()?;
        self.reader.reload()?;
        Ok(out)
    }
}

/// The analysed query tokens in order with their positions; stop words, which are dropped,
/// leave gaps, so "effect of aspirin" pairs "effect" and "aspirin" two positions apart.
fn query_tokens(query: &str) -> Vec<(usize, String)> {
    let mut analyzer = query_analyzer();
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(query);
    stream.process(&mut |t| out.push((t.position, t.text.clone())));
    out
}

/// Each term of `tokens` once, in query order.
fn distinct_terms(tokens: &[(usize, String)]) -> Vec<&str> {
    let mut terms: Vec<&str> = Vec::new();
    for (_, t) in tokens {
        if !terms.contains(&t.as_str()) {
            terms.push(t);
        }
    }
    terms
}

/// A BM25 query on `field` that rewards the query's terms (`query_tokens`) found together:
/// each distinct term (weight [`SDM_TERM`]), plus each adjacent pair of query terms as a
/// phrase at the distance it has in the query ([`SDM_ORDERED`]) and within a window
/// ([`SDM_WINDOW`]). A claim such as "birth weight predicts breast cancer" then ranks a text
/// saying "birth weight" above one with "birth" and "weight" far apart. `field` must be
/// indexed with positions.
fn dependence_clauses(field: Field, tokens: &[(usize, String)]) -> Vec<(Occur, Box<dyn Query>)> {
    let boosted = |q: Box<dyn Query>, w: f32| -> (Occur, Box<dyn Query>) {
        (Occur::Should, Box::new(BoostQuery::new(q, w)))
    };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> =
        any_of(field, distinct_terms(tokens), IndexRecordOption::WithFreqs)
            .into_iter()
            .map(|(_, q)| boosted(q, SDM_TERM))
            .collect();
    let pairs = tokens.windows(2).filter(|p| p[0].1 != p[1].1);
    for p in pairs.take(SDM_MAX_PAIRS) {
        let terms = vec![
            (0, Term::from_field_text(field, &p[0].1)),
            (p[1].0 - p[0].0, Term::from_field_text(field, &p[1].1)),
        ];
        let ordered = PhraseQuery::new_with_offset(terms.clone());
        let window = PhraseQuery::new_with_offset_and_slop(terms, SDM_SLOP);
        clauses.push(boosted(Box::new(ordered), SDM_ORDERED));
        clauses.push(boosted(Box::new(window), SDM_WINDOW));
    }
    clauses
}

/// SHOULD clauses, one per value: a query that a document with any of `values` in `field`
/// matches.
fn any_of<'a>(
    field: Field,
    values: impl IntoIterator<Item = &'a str>,
    option: IndexRecordOption,
) -> Vec<(Occur, Box<dyn Query>)> {
    values
        .into_iter()
        .map(|v| {
            let q: Box<dyn Query> =
                Box::new(TermQuery::new(Term::from_field_text(field, v), option));
            (Occur::Should, q)
        })
        .collect()
}

/// A stored text field of a document (empty if absent).
fn stored_str(d: &TantivyDocument, field: Field) -> String {
    d.get_first(field)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A stored line number of a document (0 if absent).
fn stored_u32(d: &TantivyDocument, field: Field) -> u32 {
    d.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0) as u32
}

/// The `N` of a chunk id `doc:N` (chunks of a document in order).
fn ordinal(chunk_id: &str) -> u32 {
    chunk_id
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A document's text from its chunks in order, each overlap with the previous chunk kept
/// once: the chunker's overlaps would otherwise count their terms twice.
fn reassemble<'a>(chunks: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    let mut prev: &str = "";
    for c in chunks {
        let overlap = overlap_len(prev, c);
        if overlap == 0 && !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&c[overlap..]);
        prev = c;
    }
    out
}

/// The length of the longest suffix of `a` that is a prefix of `b` (0 if none), found by
/// looking for `b`'s first 16 characters in `a` rather than trying every length. Overlaps
/// shorter than that are taken for chance (the chunker's overlaps are tens of tokens).
fn overlap_len(a: &str, b: &str) -> usize {
    let probe_end = b.char_indices().nth(16).map_or(b.len(), |(i, _)| i);
    let probe = &b[..probe_end];
    if probe.is_empty() {
        return 0;
    }
    a.match_indices(probe)
        .map(|(i, _)| i)
        .find(|&i| b.starts_with(&a[i..]))
        .map_or(0, |i| a.len() - i)
}

/// BM25 over chunks (which passage) and over whole documents (which document).
///
/// Documents get their own index, not extra entries in the chunk index, because BM25's
/// statistics (document frequency, average length) must be computed over units of one kind:
/// a document's terms spread over its chunks score lower there than in the document as a
/// whole, which is what BM25 was tuned on. Both indexes commit the same LanceDB version.
pub struct TextIndex {
    chunks: Tantivy,
    docs: Tantivy,
    fields: TextFields,
    doc_fields: schema::DocFields,
}

impl TextIndex {
    /// Opens (creating) the chunk index in `dir` and the document index in `docs_dir`.
    pub fn open(dir: &Path, docs_dir: &Path) -> Result<Self> {
        let (schema, fields) = schema::tantivy();
        let (doc_schema, doc_fields) = schema::tantivy_docs();
        Ok(TextIndex {
            chunks: Tantivy::open(dir, schema)?,
            docs: Tantivy::open(docs_dir, doc_schema)?,
            fields,
            doc_fields,
        })
    }

    /// Chunks in the chunk index.
    pub fn count(&self) -> usize {
        self.chunks.count()
    }

    /// The LanceDB table version both indexes were last committed against (see
    /// [`crate::Store`]'s recovery rule); `None` if they differ, or for an index written
    /// before versions were recorded, or never committed.
    pub fn synced_version(&self) -> Option<u64> {
        let v = self.chunks.synced_version()?;
        (self.docs.synced_version() == Some(v)).then_some(v)
    }

    fn with_writers(
        &self,
        lance_version: u64,
        chunks: impl FnOnce(&mut IndexWriter) -> Result<()>,
        docs: impl FnOnce(&mut IndexWriter) -> Result<()>,
    ) -> Result<()> {
        self.chunks.with_writer(lance_version, chunks)?;
        self.docs.with_writer(lance_version, docs)
    }

    /// One document-index entry per document among `chunks`: its title and its text
    /// put back together from its chunks.
    fn doc_entries(&self, chunks: &[ChunkRecord]) -> Vec<TantivyDocument> {
        let mut by_doc: std::collections::BTreeMap<&str, Vec<&ChunkRecord>> = Default::default();
        for c in chunks {
            by_doc.entry(c.path.as_str()).or_default().push(c);
        }
        let f = &self.doc_fields;
        by_doc
            .into_values()
            .map(|mut cs| {
                cs.sort_by_key(|c| (c.start_line, ordinal(&c.chunk_id)));
                let mut d = TantivyDocument::default();
                d.add_text(f.doc_id, &cs[0].doc_id);
                d.add_text(f.path, &cs[0].path);
                d.add_text(f.text, &cs[0].title);
                d.add_text(f.text, reassemble(cs.iter().map(|c| c.text.as_str())));
                d
            })
            .collect()
    }

    fn doc(&self, c: &ChunkRecord) -> TantivyDocument {
        let f = &self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.chunk_id, &c.chunk_id);
        d.add_text(f.doc_id, &c.doc_id);
        d.add_text(f.path, &c.path);
        d.add_text(f.title, &c.title);
        d.add_u64(f.start_line, c.start_line.into());
        d.add_u64(f.end_line, c.end_line.into());
        d.add_text(f.text, &c.text);
        d
    }

    pub fn replace(
        &self,
        paths: &[&str],
        chunks: &[ChunkRecord],
        lance_version: u64,
    ) -> Result<()> {
        self.with_writers(
            lance_version,
            |w| {
                for path in paths {
                    w.delete_term(Term::from_field_text(self.fields.path, path));
                }
                for c in chunks {
                    w.add_document(self.doc(c))?;
                }
                Ok(())
            },
            |w| {
                for path in paths {
                    w.delete_term(Term::from_field_text(self.doc_fields.path, path));
                }
                for d in self.doc_entries(chunks) {
                    w.add_document(d)?;
                }
                Ok(())
            },
        )
    }

    /// The most segments either index has.
    pub fn segments(&self) -> usize {
        [&self.chunks.index, &self.docs.index]
            .iter()
            .map(|i| i.searchable_segment_ids().map_or(0, |ids| ids.len()))
            .max()
            .unwrap_or(0)
    }

    /// Merges each index's segments into one and records that the index matches
    /// `lance_version` (after a write that changed no chunk, such as compaction).
    ///
    /// A search visits every segment, and a bulk index leaves several (seven for SciFact,
    /// which made a BM25-only query 0.75 ms slower at the median). A merge that cannot start
    /// now (one already runs in the background) is skipped: it only saves time.
    pub fn merge_segments(&self, lance_version: u64) -> Result<()> {
        let merge = |index: &Index, w: &mut IndexWriter| -> Result<()> {
            let ids = index.searchable_segment_ids()?;
            if ids.len() > 1
                && let Err(e) = w.merge(&ids).wait()
            {
                tracing::debug!("text index merge skipped: {e}");
            }
            Ok(())
        };
        self.with_writers(
            lance_version,
            |w| merge(&self.chunks.index, w),
            |w| merge(&self.docs.index, w),
        )
    }

    /// Sets the text, path and lines of every hit that has no text (a vector hit), looking
    /// the chunks up by id in one query. Returns the ids of those it could not find: chunks
    /// the vector store holds and this index does not (yet).
    pub fn fill_hits(&self, hits: &mut [Hit]) -> Result<Vec<String>> {
        let missing = any_of(
            self.fields.chunk_id,
            hits.iter()
                .filter(|h| h.text.is_empty())
                .map(|h| h.chunk_id.as_str()),
            IndexRecordOption::Basic,
        );
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let n = missing.len();
        let searcher = self.chunks.reader.searcher();
        let found = searcher.search(
            &BooleanQuery::new(missing),
            &TopDocs::with_limit(n).order_by_score(),
        )?;
        let f = self.fields;
        let mut stored = std::collections::HashMap::with_capacity(n);
        for (_, addr) in found {
            let d: TantivyDocument = searcher.doc(addr)?;
            stored.insert(
                stored_str(&d, f.chunk_id),
                (
                    stored_str(&d, f.path),
                    stored_u32(&d, f.start_line),
                    stored_u32(&d, f.end_line),
                    stored_str(&d, f.text),
                ),
            );
        }
        let mut unknown = Vec::new();
        for h in hits.iter_mut().filter(|h| h.text.is_empty()) {
            match stored.remove(&h.chunk_id) {
                Some((path, start, end, text)) => {
                    (h.path, h.start_line, h.end_line, h.text) = (path, start, end, text)
                }
                None => unknown.push(h.chunk_id.clone()),
            }
        }
        Ok(unknown)
    }

    /// The chunk id of every live document, in index order (for audits).
    pub fn chunk_ids(&self) -> Result<Vec<String>> {
        let _ = self.chunks.reader.reload();
        let searcher = self.chunks.reader.searcher();
        let mut out = Vec::new();
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            for doc in segment.doc_ids_alive() {
                let d: TantivyDocument = searcher.doc(DocAddress::new(ord as u32, doc))?;
                out.push(stored_str(&d, self.fields.chunk_id));
            }
        }
        Ok(out)
    }

    pub fn rebuild(&self, chunks: &[ChunkRecord], lance_version: u64) -> Result<()> {
        // `delete_all_documents` below needs writers with no deletes of their own behind them.
        self.chunks.discard_writer();
        self.docs.discard_writer();
        self.with_writers(
            lance_version,
            |w| {
                w.delete_all_documents()?;
                for c in chunks {
                    w.add_document(self.doc(c))?;
                }
                Ok(())
            },
            |w| {
                w.delete_all_documents()?;
                for d in self.doc_entries(chunks) {
                    w.add_document(d)?;
                }
                Ok(())
            },
        )
    }

    /// BM25 over chunks' title and text, best first.
    ///
    /// The query is analysed into terms and OR-ed rather than parsed as query syntax: users
    /// type questions, and "what's `a:b`?" must not be a syntax error.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit>> {
        let clauses = self.chunk_clauses(query);
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        self.chunk_hits(&BooleanQuery::new(clauses), limit)
    }

    /// For each of `doc_ids`, its chunk that best matches `query` (its first chunk if none
    /// matches): the passage shown for a document that only the document index found.
    /// One query for all of them.
    pub fn best_chunks_of(
        &self,
        doc_ids: &[&str],
        query: &str,
    ) -> Result<std::collections::HashMap<String, Hit>> {
        let mut out = std::collections::HashMap::new();
        if doc_ids.is_empty() {
            return Ok(out);
        }
        let in_docs = any_of(
            self.fields.doc_id,
            doc_ids.iter().copied(),
            IndexRecordOption::Basic,
        );
        let mut clauses = self.chunk_clauses(query);
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(in_docs))));
        let query = BooleanQuery::new(clauses);
        // Every chunk of those documents, best first: the first seen per document wins.
        let n = self
            .chunks
            .reader
            .searcher()
            .search(&query, &tantivy::collector::Count)?;
        for h in self.chunk_hits(&query, n.max(1))? {
            out.entry(h.doc_id.clone()).or_insert(h);
        }
        Ok(out)
    }

    /// BM25 over whole documents (title and reassembled text), best first.
    pub fn search_docs(&self, query: &str, limit: usize) -> Result<Vec<DocScore>> {
        let clauses = dependence_clauses(self.doc_fields.text, &query_tokens(query));
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.docs.reader.searcher();
        let top = searcher.search(
            &BooleanQuery::new(clauses),
            &TopDocs::with_limit(limit).order_by_score(),
        )?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            out.push(DocScore {
                doc_id: stored_str(&d, self.doc_fields.doc_id),
                path: stored_str(&d, self.doc_fields.path),
                score,
            });
        }
        Ok(out)
    }

    /// The chunk text's dependence clauses, and one SHOULD clause per query term on the title.
    fn chunk_clauses(&self, query: &str) -> Vec<(Occur, Box<dyn Query>)> {
        let tokens = query_tokens(query);
        let mut clauses = dependence_clauses(self.fields.text, &tokens);
        clauses.extend(
            any_of(
                self.fields.title,
                distinct_terms(&tokens),
                IndexRecordOption::WithFreqs,
            )
            .into_iter()
            .map(|(o, q)| {
                // Scaled as the text's single terms are, so the two fields weigh as before.
                let boosted: Box<dyn Query> = Box::new(BoostQuery::new(q, SDM_TERM * TITLE_BOOST));
                (o, boosted)
            }),
        );
        clauses
    }

    fn chunk_hits(&self, query: &dyn Query, limit: usize) -> Result<Vec<Hit>> {
        let f = self.fields;
        let searcher = self.chunks.reader.searcher();
        let top = searcher.search(query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let s = |field| stored_str(&d, field);
            hits.push(Hit {
                location: Default::default(),
                chunk_id: s(f.chunk_id),
                doc_id: s(f.doc_id),
                path: s(f.path),
                start_line: stored_u32(&d, f.start_line),
                end_line: stored_u32(&d, f.end_line),
                text: s(f.text),
                score,
                bm25_score: Some(score),
                vector_score: None,
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(doc: &str, ord: u32, text: &str) -> ChunkRecord {
        ChunkRecord {
            chunk_id: format!("{doc}:{ord}"),
            doc_id: doc.into(),
            path: format!("{doc}.md"),
            title: String::new(),
            start_line: ord + 1,
            end_line: ord + 1,
            text: text.into(),
            content_hash: String::new(),
            vector: Vec::new(),
        }
    }

    #[test]
    fn documents_are_scored_whole_and_shown_by_their_best_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let index = TextIndex::open(&dir.path().join("c"), &dir.path().join("d")).unwrap();
        let chunks = [
            chunk("a", 0, "herons wade in the estuary"),
            chunk("a", 1, "egrets nest in reeds"),
            chunk("b", 0, "herons and egrets"),
            chunk("b", 1, "plain words only"),
            chunk("c", 0, "nothing relevant here"),
            chunk("c", 1, "still nothing"),
        ];
        index
            .replace(&["a.md", "b.md", "c.md"], &chunks, 7)
            .unwrap();
        assert_eq!(index.synced_version(), Some(7));
        let docs = index.search_docs("egrets", 10).unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.doc_id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"a") && ids.contains(&"b"));
        let best = index.best_chunks_of(&["a", "b", "c"], "egrets").unwrap();
        assert_eq!(best["a"].chunk_id, "a:1");
        assert_eq!(best["b"].chunk_id, "b:0");
        assert_eq!(best["c"].chunk_id, "c:0", "no match: the first chunk");
        assert_eq!(best["a"].text, "egrets nest in reeds");
        // Replacing a document replaces its whole-document entry too.
        index
            .replace(&["a.md"], &[chunk("a", 0, "only ospreys")], 8)
            .unwrap();
        let ids: Vec<String> = index
            .search_docs("egrets", 10)
            .unwrap()
            .into_iter()
            .map(|d| d.doc_id)
            .collect();
        assert_eq!(ids, ["b"]);

        // Each commit above left a segment; merging leaves one per index, finds the same,
        // and records the version.
        index
            .replace(&["c.md"], &[chunk("c", 0, "egrets at last")], 9)
            .unwrap();
        assert!(index.segments() > 1);
        let before = index.search_docs("egrets", 10).unwrap();
        index.merge_segments(10).unwrap();
        assert_eq!(index.segments(), 1);
        assert_eq!(index.synced_version(), Some(10));
        let after = index.search_docs("egrets", 10).unwrap();
        let ids = |d: &[DocScore]| d.iter().map(|d| d.doc_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&after), ids(&before));
        assert_eq!(index.count(), 4);
    }

    #[test]
    fn a_rebuild_keeps_what_this_writer_deleted_before() {
        // A replica removes a document by path as it follows the table, then, far behind,
        // rebuilds from the whole table with that document back in it, and goes on
        // following. The document must stay: tantivy's `delete_all_documents` rewinds the
        // opstamps of a writer to those of its creation, not of its last commit
        // (quickwit-oss/tantivy#2666), so the documents a rebuild adds rank as older than
        // the deletes made before it, and a later commit applies those to them.
        let dir = tempfile::tempdir().unwrap();
        let index = TextIndex::open(&dir.path().join("c"), &dir.path().join("d")).unwrap();
        let (a, b) = (chunk("a", 0, "herons wade"), chunk("b", 0, "egrets nest"));
        index
            .replace(&["a.md", "b.md"], &[a.clone(), b.clone()], 1)
            .unwrap();
        index.replace(&["a.md"], &[], 2).unwrap();
        index.rebuild(&[a, b], 3).unwrap();
        for version in 4..10 {
            let c = chunk("c", 0, &format!("ospreys {version}"));
            index.replace(&["c.md"], &[c], version).unwrap();
            assert_eq!(index.count(), 3, "after version {version}");
            assert_eq!(index.search("herons", 10).unwrap().len(), 1, "{version}");
            assert_eq!(
                index.search_docs("herons", 10).unwrap().len(),
                1,
                "{version}"
            );
        }
    }

    #[test]
    fn query_terms_found_together_rank_first() {
        let dir = tempfile::tempdir().unwrap();
        let index = TextIndex::open(&dir.path().join("c"), &dir.path().join("d")).unwrap();
        // Same words, same lengths: only their proximity differs.
        let chunks = [
            chunk(
                "apart",
                0,
                "weight gain was seen at every birth in the cohort",
            ),
            chunk(
                "adjacent",
                0,
                "every cohort gain was seen in the birth weight",
            ),
            chunk(
                "gap",
                0,
                "seen in the cohort every weight of birth was gain",
            ),
        ];
        index
            .replace(&["apart.md", "adjacent.md", "gap.md"], &chunks, 1)
            .unwrap();
        let order = |q: &str| -> Vec<String> {
            let docs = index.search_docs(q, 10).unwrap();
            docs.into_iter().map(|d| d.doc_id).collect()
        };
        assert_eq!(order("birth weight")[0], "adjacent");
        // The stop word keeps its place: "weight of birth" is the phrase at distance 2.
        assert_eq!(order("weight of birth")[0], "gap");
        // A one-word query has no pairs: all three tie on the term alone.
        assert_eq!(order("birth").len(), 3);
        // Passages are ranked the same way.
        assert_eq!(
            index.search("birth weight", 10).unwrap()[0].doc_id,
            "adjacent"
        );
    }

    #[test]
    fn reassembling_keeps_each_overlap_once() {
        let doc = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu";
        // Overlapping slices, as the chunker makes them.
        let chunks = [&doc[..34], &doc[17..57], &doc[41..]];
        assert_eq!(reassemble(chunks.into_iter()), doc);
        // No overlap: chunks are joined on a line break.
        assert_eq!(
            reassemble(["one two", "three"].into_iter()),
            "one two\nthree"
        );
        assert_eq!(overlap_len("abc", ""), 0);
        assert_eq!(
            overlap_len("the cat", "the dog"),
            0,
            "a chance match is no overlap"
        );
        let (a, b) = ("one two three four five six", "three four five six seven");
        assert_eq!(overlap_len(a, b), "three four five six".len());
    }
}

//! `sovrag verify`: the index checked against its own invariants and against the files on
//! disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sovrag_ingest::{load, walk};
use sovrag_retrieve::ChunkRecord;

use super::{Engine, path_key};

/// What `verify` found: the index compared with the stores' own invariants and the files.
#[derive(Debug, Default, Serialize)]
pub struct Verification {
    pub files: usize,
    pub chunks: usize,
    pub violations: Vec<String>,
}

impl Engine {
    /// Checks the index against itself and against the files under `roots`: the two stores
    /// agree chunk for chunk with no duplicates, every indexable file is indexed with its
    /// current content (hash, text and line spans) and nothing else is.
    pub async fn verify(&self, roots: &[PathBuf]) -> Result<Verification> {
        let audit = self.store.audit().await?;
        let mut v = Verification {
            chunks: audit.chunks.len(),
            violations: audit.violations,
            ..Default::default()
        };
        let mut by_path: HashMap<&str, Vec<&ChunkRecord>> = HashMap::new();
        for c in &audit.chunks {
            by_path.entry(c.path.as_str()).or_default().push(c);
        }
        let mut roots_c = Vec::new();
        let mut seen = HashSet::new();
        for r in roots {
            let r = std::fs::canonicalize(r).with_context(|| format!("{}", r.display()))?;
            for f in walk::files(&r) {
                let key = path_key(&f);
                v.files += 1;
                let chunks = by_path.get(key.as_str()).cloned().unwrap_or_default();
                seen.insert(key.clone());
                match load::load_document(&f, self.config.max_file_bytes, &self.extractor) {
                    Ok(doc) => check_file(&key, &doc, &chunks, &mut v.violations),
                    Err(e) if !chunks.is_empty() => v
                        .violations
                        .push(format!("{key}: not indexable ({e}) but has chunks")),
                    Err(_) => {}
                }
            }
            roots_c.push(r);
        }
        let mut orphans: Vec<&str> = by_path
            .keys()
            .filter(|p| !seen.contains(**p) && roots_c.iter().any(|r| Path::new(p).starts_with(r)))
            .copied()
            .collect();
        orphans.sort();
        for p in orphans {
            v.violations
                .push(format!("{p}: indexed but not an indexable file on disk"));
        }
        Ok(v)
    }
}

/// Compares one file's stored chunks with its current content (see [`Engine::verify`]).
fn check_file(key: &str, doc: &load::Document, chunks: &[&ChunkRecord], out: &mut Vec<String>) {
    if chunks.is_empty() {
        out.push(format!("{key}: on disk but not indexed"));
        return;
    }
    if let Some(c) = chunks.iter().find(|c| c.content_hash != doc.content_hash) {
        out.push(format!(
            "{key}: indexed content {} is stale (file is {})",
            c.content_hash, doc.content_hash
        ));
        return;
    }
    // Split as the chunker counts lines (on \n), so a CRLF file's chunks still match.
    let lines: Vec<&str> = doc.text.split('\n').collect();
    let mut covered = vec![false; lines.len()];
    for c in chunks {
        let (s, e) = (c.start_line as usize, c.end_line as usize);
        if s == 0 || e < s || e > lines.len() {
            out.push(format!(
                "{key}: chunk {} has lines {s}-{e} of {}",
                c.chunk_id,
                lines.len()
            ));
            continue;
        }
        if !lines[s - 1..e].join("\n").contains(c.text.trim()) {
            out.push(format!(
                "{key}: chunk {} text is not at lines {s}-{e}",
                c.chunk_id
            ));
        }
        covered[s - 1..e].iter_mut().for_each(|x| *x = true);
    }
    if let Some(i) = (0..lines.len()).find(|&i| !covered[i] && !lines[i].trim().is_empty()) {
        out.push(format!("{key}: line {} is in no chunk", i + 1));
    }
}

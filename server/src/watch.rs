//! Keeping watched folders in sync: notify events, debounced, applied through the engine,
//! with whole-folder reconciles at start, when events were lost, and periodically.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify_debouncer_full::notify::{ErrorKind, EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, new_debouncer};

use crate::engine::{Engine, Work, WorkGuard};

/// Long enough to fold an editor's write-rename-chmod burst into one change, short enough
/// that a saved file is searchable within a second.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often a folder the OS would not fully watch is reconciled instead.
const LIMITED_RECONCILE: Duration = Duration::from_secs(30);
const LIMIT_HINT: &str = "the OS limit on file watches was reached; raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (add it to /etc/sysctl.conf to keep it)";

/// Watches `root` (canonical) and applies its changes until the process ends. Reconciles
/// the folder once at start, after the watch is in place, so no change can fall in between.
/// `starting` (from [`Engine::work_ahead`], taken before the server answers) is let go once
/// that reconcile is done: until then status says the folder is being indexed, never idle
/// with nothing in it.
///
/// `reconcile_every` re-walks the folder as a safety net (`None`: only when needed). When
/// the OS refuses more watches, the folder is reconciled every 30 s instead, so changes in
/// the unwatched part still arrive, and the reason is logged and shown in status.
pub async fn watch(
    engine: Arc<Engine>,
    root: PathBuf,
    reconcile_every: Option<Duration>,
    starting: WorkGuard<Arc<Engine>>,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DebounceEventResult>();
    // Paths are counted as queued from the moment the debouncer hands them over, so status
    // shows them waiting during a long sync or reconcile too.
    let counter = engine.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
        counter.queue_add(paths_in(&res));
        let _ = tx.send(res);
    })
    .context("starting the file watcher")?;
    let mut limited = false;
    match debouncer.watch(&root, RecursiveMode::Recursive) {
        Ok(()) => {
            tracing::info!("watching {}", root.display());
            engine.set_watching(&root, "file-system events".into());
        }
        Err(e) if matches!(e.kind, ErrorKind::MaxFilesWatch) => limited = true,
        Err(e) => anyhow::bail!("watching {}: {e}", root.display()),
    }
    if limited {
        limit_reached(&engine, &root);
    }
    reconcile(&engine, &root, "start-up").await;
    drop(starting);

    let period = |limited: bool| {
        if limited {
            Some(reconcile_every.map_or(LIMITED_RECONCILE, |d| d.min(LIMITED_RECONCILE)))
        } else {
            reconcile_every
        }
    };
    let mut next_reconcile = period(limited).map(|d| tokio::time::Instant::now() + d);
    loop {
        let res = match next_reconcile {
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(r) => r,
                Err(_) => {
                    reconcile(&engine, &root, "periodic").await;
                    next_reconcile = period(limited).map(|d| tokio::time::Instant::now() + d);
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(res) = res else { break };
        // Fold everything that is already queued into one sync.
        let mut batch = vec![res];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let taken: usize = batch.iter().map(paths_in).sum();
        let mut paths = BTreeSet::new();
        let mut rescan = false;
        for res in batch {
            match res {
                Ok(events) => {
                    for ev in changes(&events) {
                        tracing::debug!("event {:?} {:?}", ev.event.kind, ev.event.paths);
                        rescan |= ev.need_rescan();
                        paths.extend(ev.event.paths.iter().cloned());
                    }
                }
                Err(errors) => {
                    for e in errors {
                        if matches!(e.kind, ErrorKind::MaxFilesWatch) {
                            if !limited {
                                limited = true;
                                limit_reached(&engine, &root);
                                next_reconcile =
                                    period(true).map(|d| tokio::time::Instant::now() + d);
                            }
                        } else {
                            tracing::warn!("watcher: {e}");
                        }
                    }
                    rescan = true;
                }
            }
        }
        if rescan {
            reconcile(&engine, &root, "events were lost").await;
            engine.queue_done(taken);
            continue;
        }
        let result = {
            let _busy = engine.work(Work::Sync);
            engine.sync_paths(&root, paths.into_iter().collect()).await
        };
        engine.queue_done(taken);
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

/// How many paths a debouncer delivery names (an error counts as one).
fn paths_in(res: &DebounceEventResult) -> usize {
    match res {
        Ok(events) => changes(events).map(|e| e.event.paths.len()).sum(),
        Err(errors) => errors.len(),
    }
}

/// The events that may change what is indexed. Opening or closing a file changes nothing,
/// and our own reads produce such events: following them would loop.
fn changes(events: &[DebouncedEvent]) -> impl Iterator<Item = &DebouncedEvent> {
    events
        .iter()
        .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
}

fn limit_reached(engine: &Engine, root: &Path) {
    tracing::error!(
        "watching {}: {LIMIT_HINT}; reconciling it every {} s instead",
        root.display(),
        LIMITED_RECONCILE.as_secs()
    );
    engine.set_watching(
        root,
        format!(
            "partly by periodic reconcile every {} s: {LIMIT_HINT}",
            LIMITED_RECONCILE.as_secs()
        ),
    );
}

/// Walks `root` and fixes whatever differs from the index.
async fn reconcile(engine: &Engine, root: &Path, why: &str) {
    let result = {
        let _busy = engine.work(Work::Reconcile);
        engine.index_paths(&[root.to_path_buf()], &|_, _| {}).await
    };
    match result {
        Ok(r) if why != "periodic" || r.indexed + r.removed > 0 => tracing::info!(
            "{} reconciled ({why}): {} indexed, {} unchanged, {} skipped, {} removed ({:.1}s)",
            root.display(),
            r.indexed,
            r.unchanged,
            r.skipped,
            r.removed,
            r.seconds
        ),
        Ok(_) => {}
        Err(e) => tracing::error!("reconciling {} ({why}): {e:#}", root.display()),
    }
}

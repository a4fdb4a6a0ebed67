//! Which files of a folder are candidates for indexing.

use std::path::{Path, PathBuf};

/// Files under `root` that sovrag should consider, sorted for a stable order.
///
/// Follows the same rules as the watcher: `.gitignore`, `.ignore` and hidden files are
/// respected, symlinks are not followed (a loop cannot trap us), and only regular files
/// are returned. Errors on single entries are logged and skipped, never fatal.
pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .follow_links(false)
        .require_git(false)
        .build();
    for entry in walker {
        match entry {
            Ok(e) if e.file_type().is_some_and(|t| t.is_file()) => out.push(e.into_path()),
            Ok(_) => {}
            Err(err) => tracing::warn!("walking {}: {err}", root.display()),
        }
    }
    out.sort();
    out
}

/// Whether `path` (somewhere under `root`) would be skipped by [`files`]: hidden or ignored.
pub fn is_ignored(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return true;
    };
    if rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    {
        return true;
    }
    let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
    // Every .gitignore/.ignore between root and the file applies.
    let mut dir = root.to_path_buf();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        for name in [".gitignore", ".ignore"] {
            let f = dir.join(name);
            if f.is_file() {
                builder.add(f);
            }
        }
        dir.push(c);
    }
    for name in [".gitignore", ".ignore"] {
        let f = dir.join(name);
        if f.is_file() {
            builder.add(f);
        }
    }
    match builder.build() {
        Ok(gi) => gi
            .matched_path_or_any_parents(rel, path.is_dir())
            .is_ignore(),
        Err(_) => false,
    }
}

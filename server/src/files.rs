//! The data dir's small JSON files (problems, kept answers, eval results).

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `value` to `path` as JSON, whole, then renames it into place: a reader, or a
/// restart after a crash, finds the old file or the new one, never half of one.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

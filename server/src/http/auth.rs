//! Who may call the API: bearer keys, given on the command line or kept in a file that is
//! read again when it changes (a key can be added or revoked without a restart).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result};

pub struct Keys {
    fixed: Vec<String>,
    file: Option<PathBuf>,
    /// The file's keys, and the modification time they were read at.
    from_file: Mutex<(Option<SystemTime>, Vec<String>)>,
}

/// The keys in a key file: one a line; blank lines and `#` comments skipped.
fn parse(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

impl Keys {
    /// `fixed` keys and the keys in `file`, which must be readable now.
    pub fn new(fixed: Vec<String>, file: Option<PathBuf>) -> Result<Self> {
        let keys = Keys {
            fixed,
            file,
            from_file: Mutex::new((None, Vec::new())),
        };
        if let Some(f) = &keys.file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--api-key-file {}", f.display()))?;
            let modified = std::fs::metadata(f).and_then(|m| m.modified()).ok();
            *keys.from_file.lock().expect("keys lock") = (modified, parse(&text));
        }
        Ok(keys)
    }

    /// Whether requests must carry a key.
    pub fn required(&self) -> bool {
        !self.fixed.is_empty() || self.file.is_some()
    }

    /// One of the keys (the first given, else the file's first), for a client of the server.
    pub fn any(&self) -> Option<String> {
        let from_file = self.from_file.lock().expect("keys lock");
        self.fixed.iter().chain(from_file.1.iter()).next().cloned()
    }

    /// Whether `given` is one of the keys. The file is read again when its modification time
    /// changed; a file that cannot be read keeps the keys read last.
    pub fn accepts(&self, given: &str) -> bool {
        let mut from_file = self.from_file.lock().expect("keys lock");
        if let Some(f) = &self.file {
            let modified = std::fs::metadata(f).and_then(|m| m.modified()).ok();
            if modified != from_file.0
                && let Ok(text) = std::fs::read_to_string(f)
            {
                *from_file = (modified, parse(&text));
            }
        }
        // Every key is compared, each without an early exit: timing does not tell which
        // key, or how much of one, matched.
        self.fixed
            .iter()
            .chain(from_file.1.iter())
            .fold(false, |ok, key| ok | same(given, key))
    }
}

/// Constant-time equality (for equal lengths).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |x, (p, q)| x | (p ^ q)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_flags_and_a_file_that_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# team keys\nalpha\n\n  beta  \n").unwrap();
        let keys = Keys::new(vec!["flag".into()], Some(file.clone())).unwrap();
        assert!(keys.required());
        for k in ["flag", "alpha", "beta"] {
            assert!(keys.accepts(k), "{k}");
        }
        assert!(!keys.accepts("alph") && !keys.accepts("# team keys") && !keys.accepts(""));
        assert_eq!(keys.any().as_deref(), Some("flag"));
        // Revoke alpha, add gamma: taken without a restart (the time must differ).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, "beta\ngamma\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(!keys.accepts("alpha"));
        assert!(keys.accepts("gamma") && keys.accepts("flag"));
        assert!(!Keys::new(Vec::new(), None).unwrap().required());
        assert!(Keys::new(Vec::new(), Some(dir.path().join("none"))).is_err());
    }
}

//! Extraction in a worker process, so that no file can take the indexer down.
//!
//! The parent runs a program (the `sovrag` binary, as `sovrag __extract-worker FILE`) that
//! calls [`worker_main`]: it lowers its own address-space and CPU limits, extracts, and
//! writes `{"Ok": Extracted}` or `{"Err": Failure}` as JSON on stdout. The parent kills it
//! at the wall-clock limit. A panic, abort, stack overflow or allocation failure ends the
//! worker alone, and the parent reports it as that file's failure.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Extracted, Failure, Format, extract_bytes};

/// What one extraction may use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Wall-clock seconds before the worker is killed.
    pub timeout_secs: u64,
    /// The worker's address-space limit, in bytes.
    pub max_memory_bytes: u64,
    /// What the members of a zip-based document may decompress to, in all.
    pub max_decompressed_bytes: u64,
    /// Files larger than this are not read.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            // The worker is the whole sovrag binary (~250 MB mapped); a 2 GiB address space
            // leaves well over a gigabyte for one document.
            max_memory_bytes: 2 << 30,
            max_decompressed_bytes: 512 << 20,
            max_file_bytes: 50 << 20,
        }
    }
}

/// The environment variable that hands the worker its [`Limits`] (JSON).
const LIMITS_ENV: &str = "SOVRAG_EXTRACT_LIMITS";

/// Test-only fault hook: `hang`, `crash`, `oom` or `overflow` makes the worker misbehave
/// that way instead of extracting, so tests can check the parent survives each.
const FAULT_ENV: &str = "SOVRAG_TEST_EXTRACT_FAULT";

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct Isolation {
    program: PathBuf,
    args: Vec<OsString>,
    limits: Limits,
}

impl Isolation {
    /// Workers run as `program args… FILE`.
    pub fn new(program: PathBuf, args: Vec<OsString>, limits: Limits) -> Self {
        Self {
            program,
            args,
            limits,
        }
    }

    /// Extracts `path` in a worker.
    pub fn extract(&self, path: &Path) -> Result<Extracted, Failure> {
        let limits = serde_json::to_string(&self.limits).unwrap_or_default();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg(path)
            .env(LIMITS_ENV, limits)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::Crash(format!("cannot start {}: {e}", self.program.display())))?;
        // Read both pipes while waiting: a worker blocked on a full pipe would look hung.
        let cap = self.limits.max_file_bytes.saturating_mul(8).max(64 << 20);
        let out = child.stdout.take().map(|s| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = s.take(cap).read_to_end(&mut v);
                v
            })
        });
        let err = child.stderr.take().map(|s| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = s.take(1 << 20).read_to_end(&mut v);
                v
            })
        });
        let deadline = Instant::now() + Duration::from_secs(self.limits.timeout_secs);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(Failure::Crash(format!("waiting for the worker: {e}"))),
            }
        };
        let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
        let Some(status) = status else {
            return Err(Failure::Timeout(self.limits.timeout_secs));
        };
        if status.success()
            && let Ok(reply) = serde_json::from_slice::<Result<Extracted, Failure>>(&stdout)
        {
            return reply;
        }
        let stderr = String::from_utf8_lossy(&stderr);
        if stderr.contains("memory allocation of") {
            return Err(Failure::TooLarge(format!(
                "needed more than the {} MB memory limit",
                self.limits.max_memory_bytes >> 20
            )));
        }
        let how = {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (_, Some(sig)) => format!("signal {sig}"),
                (Some(code), _) => format!("exit code {code}"),
                _ => "no exit status".into(),
            }
        };
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        Err(Failure::Crash(format!("{how}{last}")))
    }
}

/// The worker: extracts `path` under the limits the parent set, writes the result as JSON
/// on stdout, and returns the exit code.
pub fn worker_main(path: &Path) -> i32 {
    let limits: Limits = std::env::var(LIMITS_ENV)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    // The limits are the worker's own: whatever happens in here, the parent is untouched.
    let mem = limits.max_memory_bytes;
    let _ = rlimit::setrlimit(rlimit::Resource::AS, mem, mem);
    // A worker the parent lost (the daemon was killed) still stops.
    let cpu = limits.timeout_secs.saturating_add(5);
    let _ = rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu);
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    if let Ok(fault) = std::env::var(FAULT_ENV) {
        fault_hook(&fault);
    }
    let reply = read_and_extract(path, &limits);
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &reply) {
        Ok(()) if out.flush().is_ok() => 0,
        _ => 1,
    }
}

fn read_and_extract(path: &Path, limits: &Limits) -> Result<Extracted, Failure> {
    let format = Format::of(path)
        .ok_or_else(|| Failure::Unreadable("not a format sovrag extracts".into()))?;
    let meta = std::fs::metadata(path).map_err(|e| Failure::Unreadable(e.to_string()))?;
    if meta.len() > limits.max_file_bytes {
        return Err(Failure::TooLarge(format!(
            "{} bytes is over the {} byte limit",
            meta.len(),
            limits.max_file_bytes
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Failure::Unreadable(e.to_string()))?;
    extract_bytes(format, &bytes, limits)
}

fn fault_hook(fault: &str) {
    match fault {
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "crash" => std::process::abort(),
        "oom" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(std::hint::black_box(vec![0u8; 64 << 20]));
            }
        }
        "overflow" => {
            fn deeper(n: u64) -> u64 {
                let pad = std::hint::black_box([n; 512]);
                if n == u64::MAX {
                    return 0;
                }
                deeper(n + 1) + pad[(n % 512) as usize]
            }
            std::hint::black_box(deeper(0));
        }
        _ => {}
    }
}

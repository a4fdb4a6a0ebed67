//! Extraction in worker processes, so that no file can take the indexer down.
//!
//! The parent runs a program (the `sovrag` binary, as `sovrag __extract-worker`) that calls
//! [`worker_main`]: it lowers its own address-space limit, then reads one file per request
//! from its stdin and answers each with `{"Ok": Extracted}` or `{"Err": Failure}` as JSON.
//! A worker serves many files, since starting the 250 MB binary costs more than reading a
//! small PDF; it is killed at the wall-clock limit. A panic, abort, stack overflow or
//! allocation failure ends that worker alone: the parent reports it as that file's failure
//! and starts a fresh worker for the next file.
//!
//! Frames both ways are a little-endian `u32` length and that many bytes: the request is the
//! path's bytes (paths need not be UTF-8), the reply the JSON.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
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

/// Test-only fault hook: `hang`, `crash`, `oom` or `overflow` (optionally `:FILENAME`, for
/// that file only) makes the worker misbehave that way instead of extracting, so tests can
/// check the parent survives each and goes on with the next file.
const FAULT_ENV: &str = "SOVRAG_TEST_EXTRACT_FAULT";

/// A worker is replaced after this many files, so that whatever one document left behind
/// in its heap (fragmentation, a leak in a parser) does not build up.
const FILES_PER_WORKER: u32 = 256;

/// How to start workers, and the ones idle between files.
#[derive(Debug, Clone)]
pub struct Isolation {
    program: PathBuf,
    args: Vec<OsString>,
    limits: Limits,
    idle: Arc<Mutex<Vec<Worker>>>,
}

impl Isolation {
    /// Workers run as `program args…`.
    pub fn new(program: PathBuf, args: Vec<OsString>, limits: Limits) -> Self {
        Self {
            program,
            args,
            limits,
            idle: Arc::default(),
        }
    }

    /// Extracts `path` in a worker.
    pub fn extract(&self, path: &Path) -> Result<Extracted, Failure> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut worker = match idle {
            Some(w) => w,
            None => self.spawn()?,
        };
        if worker.send(path).is_err() {
            // It died while idle (killed from outside): a fresh one gets the file.
            worker = self.spawn()?;
            worker
                .send(path)
                .map_err(|e| Failure::Crash(format!("cannot reach the worker: {e}")))?;
        }
        let deadline = Duration::from_secs(self.limits.timeout_secs);
        match worker.replies.recv_timeout(deadline) {
            Ok(frame) => {
                let Ok(reply) = serde_json::from_slice::<Result<Extracted, Failure>>(&frame) else {
                    return Err(Failure::Crash("the worker's reply was garbled".into()));
                };
                worker.served += 1;
                if worker.served < FILES_PER_WORKER {
                    self.idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(worker);
                }
                reply
            }
            Err(RecvTimeoutError::Timeout) => Err(Failure::Timeout(self.limits.timeout_secs)),
            Err(RecvTimeoutError::Disconnected) => Err(worker.died(&self.limits)),
        }
    }

    fn spawn(&self) -> Result<Worker, Failure> {
        let limits = serde_json::to_string(&self.limits).unwrap_or_default();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env(LIMITS_ENV, limits)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::Crash(format!("cannot start {}: {e}", self.program.display())))?;
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Failure::Crash("the worker has no pipes".into()));
                }
            };
        // Both pipes are read all the time: a worker blocked on a full pipe would look hung.
        let cap = self.limits.max_file_bytes.saturating_mul(8).max(64 << 20);
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = BufReader::new(stdout);
            while let Some(frame) = read_frame(&mut out, cap) {
                if tx.send(frame).is_err() {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let lines = Arc::clone(&tail);
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                let mut t = lines.lock().unwrap_or_else(PoisonError::into_inner);
                if t.len() == 16 {
                    t.pop_front();
                }
                t.push_back(String::from_utf8_lossy(&line).into_owned());
            }
        });
        Ok(Worker {
            child,
            stdin,
            replies,
            stderr_tail: tail,
            stderr: Some(stderr),
            served: 0,
        })
    }
}

/// One running worker.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Vec<u8>>,
    /// Its last lines on stderr since the current file was sent.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr: Option<std::thread::JoinHandle<()>>,
    served: u32,
}

impl Worker {
    fn send(&mut self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        self.stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        write_frame(&mut self.stdin, path.as_os_str().as_bytes())
    }

    /// Why the worker ended without replying.
    fn died(mut self, limits: &Limits) -> Failure {
        // Its stdout ended, so it is exiting; unless its reply was over the size cap and it
        // is still writing it, which waiting alone would wait on forever.
        let grace = Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let status = self.child.wait();
        // Its stderr closes with it: everything it wrote is in the tail once the reader ends.
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
        let tail: Vec<String> = self
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        if tail.iter().any(|l| l.contains("memory allocation of")) {
            return Failure::TooLarge(format!(
                "needed more than the {} MB memory limit",
                limits.max_memory_bytes >> 20
            ));
        }
        let how = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (_, Some(sig)) => format!("signal {sig}"),
                    (Some(code), _) => format!("exit code {code}"),
                    _ => "no exit status".into(),
                }
            }
            Err(e) => format!("no exit status: {e}"),
        };
        let last = tail
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        Failure::Crash(format!("{how}{last}"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Idle or past its limit; nothing of value is lost by stopping it at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_frame(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("a frame over 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)?;
    w.flush()
}

/// The next frame, or `None` at the end of the stream, on a read error, or for a frame
/// longer than `cap` bytes.
fn read_frame(r: &mut impl Read, cap: u64) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).ok()?;
    let len = u32::from_le_bytes(len);
    if u64::from(len) > cap {
        return None;
    }
    let mut frame = vec![0u8; len as usize];
    r.read_exact(&mut frame).ok()?;
    Some(frame)
}

/// The worker: serves extraction requests from stdin under the limits the parent set, until
/// stdin ends (the parent is done or gone). Returns the exit code.
pub fn worker_main() -> i32 {
    use std::os::unix::ffi::OsStringExt;
    let limits: Limits = std::env::var(LIMITS_ENV)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    // The limits are the worker's own: whatever happens in here, the parent is untouched.
    let mem = limits.max_memory_bytes;
    let _ = rlimit::setrlimit(rlimit::Resource::AS, mem, mem);
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    // A worker the parent lost mid-file (the daemon was killed) still stops: the parent's
    // own deadline cannot reach it any more, so the worker keeps one of its own.
    let busy_since: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watched = Arc::clone(&busy_since);
    let allowed = Duration::from_secs(limits.timeout_secs.saturating_add(5));
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let since = *watched.lock().unwrap_or_else(PoisonError::into_inner);
            if since.is_some_and(|t| t.elapsed() > allowed) {
                std::process::abort();
            }
        }
    });
    let fault = std::env::var(FAULT_ENV).ok();
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    while let Some(request) = read_frame(&mut input, 1 << 20) {
        let path = PathBuf::from(OsString::from_vec(request));
        *busy_since.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        if let Some(fault) = &fault {
            fault_hook(fault, &path);
        }
        let reply = read_and_extract(&path, &limits);
        *busy_since.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let written = serde_json::to_vec(&reply)
            .map_err(std::io::Error::other)
            .and_then(|json| write_frame(&mut out, &json));
        if written.is_err() {
            return 1;
        }
    }
    0
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

/// `fault` alone applies to every file; `fault:NAME` to files named NAME only.
fn fault_hook(fault: &str, path: &Path) {
    let (fault, only) = fault.split_once(':').unwrap_or((fault, ""));
    if !only.is_empty() && path.file_name().is_none_or(|n| n != only) {
        return;
    }
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

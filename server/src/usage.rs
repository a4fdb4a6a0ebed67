//! The usage ledger: what this installation did, per day — tokens embedded, prompt and
//! generated tokens per generator, answers, searches, CPU seconds — and whether its sockets
//! stayed on the machine while it did. `report` prices it.
//!
//! One ledger per process, opened on the installation's data dir by [`open`] (the engine of
//! `eval` works in a scratch dir below it, and its work still counts here). Counters are
//! added up in memory and appended every [`FLUSH_EVERY`] as one JSON line to
//! `DATA_DIR/usage.jsonl`, written with `O_APPEND` and synced: a `kill -9` loses at most
//! the last interval, a line cut short is skipped on reading, and a server and a CLI run
//! may append to the same file. Nothing in it is document text or a question.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sovrag_ingest::embed::Embedder;

/// The ledger's file in the data dir.
pub const FILE: &str = "usage.jsonl";
/// How often counters are written out: what a `kill -9` can lose.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// CPU time alone (an idle server's housekeeping) is written once it adds up to this.
const IDLE_CPU_SECONDS: f64 = 30.0;

/// Counts for one generator.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCounts {
    pub answers: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
}

/// What was done in some span of time (one ledger line, or a day, or a report's window).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Model tokens run through the embedding model (documents and queries).
    pub embedded_tokens: u64,
    /// Texts embedded (chunks and queries).
    pub embedded_texts: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub answers: u64,
    pub searches: u64,
    /// CPU time of the process and its extraction workers (user + system).
    pub cpu_seconds: f64,
    /// No-egress checks run on the process's own sockets, and the ones that found a socket
    /// that could leave the machine (see `egress`).
    pub egress_checks: u64,
    pub egress_violations: u64,
    /// Generators loaded (the first answer, or a request naming another model), and loads
    /// that failed.
    pub model_loads: u64,
    pub model_load_failures: u64,
    /// Per generator (GGUF file name without `.gguf`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub generators: BTreeMap<String, ModelCounts>,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.embedded_tokens += o.embedded_tokens;
        self.embedded_texts += o.embedded_texts;
        self.prompt_tokens += o.prompt_tokens;
        self.generated_tokens += o.generated_tokens;
        self.answers += o.answers;
        self.searches += o.searches;
        self.cpu_seconds += o.cpu_seconds;
        self.egress_checks += o.egress_checks;
        self.egress_violations += o.egress_violations;
        self.model_loads += o.model_loads;
        self.model_load_failures += o.model_load_failures;
        for (k, v) in &o.generators {
            let m = self.generators.entry(k.clone()).or_default();
            m.answers += v.answers;
            m.prompt_tokens += v.prompt_tokens;
            m.generated_tokens += v.generated_tokens;
        }
    }

    /// Anything counted besides CPU time.
    fn has_work(&self) -> bool {
        let without_cpu = Counts {
            cpu_seconds: 0.0,
            ..self.clone()
        };
        without_cpu != Counts::default()
    }
}

/// One line of the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The local date the counts were made on (`YYYY-MM-DD`).
    pub day: String,
    /// Unix seconds when the line was written.
    pub ts: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

struct Ledger {
    path: PathBuf,
    pending: Mutex<Counts>,
    /// Embedders whose token counters are read at each flush, with the counts last read.
    /// Held (not weakly): a CLI command's engine is gone by its last flush, and its count
    /// must still be read.
    embedders: Mutex<Vec<(Arc<Embedder>, u64, u64)>>,
    /// Process CPU seconds at the last flush.
    cpu_at_flush: Mutex<f64>,
    /// Everything written since the process started, for `/metrics`.
    written: Mutex<Counts>,
}

static LEDGER: OnceLock<Ledger> = OnceLock::new();

/// Opens the ledger in `data_dir` for this process and starts writing it out every
/// [`FLUSH_EVERY`]. Later calls do nothing. Accounting must never stop work, so failures
/// to write are logged, not returned.
pub fn open(data_dir: &Path) {
    let ledger = Ledger {
        path: data_dir.join(FILE),
        pending: Mutex::new(Counts::default()),
        embedders: Mutex::new(Vec::new()),
        cpu_at_flush: Mutex::new(cpu_seconds()),
        written: Mutex::new(Counts::default()),
    };
    if LEDGER.set(ledger).is_ok() {
        let spawned = std::thread::Builder::new()
            .name("usage-ledger".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush_with(false);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("usage ledger: cannot start its writer: {e}");
        }
    }
}

/// Adds to the counters (nothing when no ledger is open, as in unit tests).
pub fn record(f: impl FnOnce(&mut Counts)) {
    if let Some(l) = LEDGER.get() {
        f(&mut l.pending.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// Counts a generated answer.
pub fn answered(model: &str, prompt_tokens: usize, generated_tokens: usize) {
    record(|c| {
        c.answers += 1;
        c.generators.entry(model.to_owned()).or_default().answers += 1;
    });
    generated(model, prompt_tokens, generated_tokens);
}

/// Counts the tokens generator `model` read and wrote: an answer's, or other work such as
/// rewriting a follow-up question.
pub fn generated(model: &str, prompt_tokens: usize, generated_tokens: usize) {
    record(|c| {
        c.prompt_tokens += prompt_tokens as u64;
        c.generated_tokens += generated_tokens as u64;
        let m = c.generators.entry(model.to_owned()).or_default();
        m.prompt_tokens += prompt_tokens as u64;
        m.generated_tokens += generated_tokens as u64;
    });
}

/// Counts what `embedder` embeds from now on.
pub fn track(embedder: &Arc<Embedder>) {
    if let Some(l) = LEDGER.get() {
        l.embedders.lock().unwrap_or_else(|e| e.into_inner()).push((
            embedder.clone(),
            embedder.tokens_embedded(),
            embedder.inputs_embedded(),
        ));
    }
}

/// What this process has counted since it started (written, and still pending: tokens
/// embedded are read from the embedders at each write, so they trail by up to
/// [`FLUSH_EVERY`]). `None` without a ledger.
pub fn process_totals() -> Option<Counts> {
    let l = LEDGER.get()?;
    let mut c = l.written.lock().unwrap_or_else(|e| e.into_inner()).clone();
    c.add(&l.pending.lock().unwrap_or_else(|e| e.into_inner()));
    Some(c)
}

/// Writes what is pending now (at the end of a CLI command).
pub fn flush() {
    flush_with(true);
}

fn flush_with(always: bool) {
    let Some(l) = LEDGER.get() else {
        return;
    };
    let mut counts = {
        let mut pending = l.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut embedders = l.embedders.lock().unwrap_or_else(|e| e.into_inner());
        for (e, tokens, texts) in embedders.iter_mut() {
            let (t, n) = (e.tokens_embedded(), e.inputs_embedded());
            pending.embedded_tokens += t - *tokens;
            pending.embedded_texts += n - *texts;
            (*tokens, *texts) = (t, n);
        }
        std::mem::take(&mut *pending)
    };
    let cpu = cpu_seconds();
    {
        let mut at = l.cpu_at_flush.lock().unwrap_or_else(|e| e.into_inner());
        counts.cpu_seconds = ((cpu - *at).max(0.0) * 100.0).round() / 100.0;
        let idle = !counts.has_work()
            && (counts.cpu_seconds == 0.0 || (counts.cpu_seconds < IDLE_CPU_SECONDS && !always));
        if idle {
            // Nothing worth a line yet; the CPU time stays counted from `at`.
            return;
        }
        *at = cpu;
    }
    // Checked while the work is recorded: the privacy factor of `report` rests on it.
    match crate::egress::check(None) {
        Ok(s) => {
            counts.egress_checks = 1;
            if !s.passes() {
                counts.egress_violations = 1;
                tracing::warn!(
                    "no-egress check: this process holds sockets that could leave the machine: {:?}",
                    s.violations
                );
            }
        }
        Err(e) => tracing::debug!("no-egress check: {e}"),
    }
    l.written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&counts);
    let record = Record {
        day: today(),
        ts: now_secs(),
        counts,
    };
    if let Err(e) = append(&l.path, &record) {
        tracing::warn!("usage ledger {}: {e:#}", l.path.display());
    }
}

/// Appends one line, starting a new line first if the last write was cut short.
fn append(path: &Path, record: &Record) -> Result<()> {
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context("creating the data dir")?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .context("opening")?;
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    f.write_all(line.as_bytes()).context("writing")?;
    f.sync_data().context("syncing")?;
    Ok(())
}

/// The ledger's lines in `data_dir`, and how many lines could not be read (a line cut short
/// by a crash). No ledger yet is an empty one.
pub fn read(data_dir: &Path) -> Result<(Vec<Record>, usize)> {
    let path = data_dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut bad = 0;
    let records = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let r = serde_json::from_str::<Record>(l).ok();
            bad += usize::from(r.is_none());
            r
        })
        .collect();
    Ok((records, bad))
}

/// The records added up per day.
pub fn by_day(records: &[Record]) -> BTreeMap<String, Counts> {
    let mut days: BTreeMap<String, Counts> = BTreeMap::new();
    for r in records {
        days.entry(r.day.clone()).or_default().add(&r.counts);
    }
    days
}

/// Today's local date, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// CPU seconds (user + system) of this process and of its children that have ended (the
/// extraction workers), from `/proc/self/stat`; 0 where there is no `/proc`.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_of_stat(&s))
        .unwrap_or(0.0)
}

/// utime + stime + cutime + cstime of a `/proc/PID/stat` line, in seconds. The fields
/// count USER_HZ ticks, which Linux fixes at 100 for user space on every architecture
/// sovrag builds for. The command name (field 2) may hold spaces, so fields are counted
/// from its closing parenthesis.
fn cpu_of_stat(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) .. cstime (17) are at 11..=14 here.
    let ticks: Option<Vec<f64>> = (11..=14).map(|i| f.get(i)?.parse().ok()).collect();
    Some(ticks?.iter().sum::<f64>() / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_short_is_skipped_and_the_next_one_starts_clean() {
        let dir = tempfile::tempdir().unwrap();
        let r = |n| Record {
            day: "2026-11-27".into(),
            ts: 1,
            counts: Counts {
                answers: n,
                ..Counts::default()
            },
        };
        append(&dir.path().join(FILE), &r(1)).unwrap();
        // A crash mid-write leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"day\":\"2026-11-27\",\"ts\":2,\"ans")
            .unwrap();
        append(&dir.path().join(FILE), &r(2)).unwrap();
        let (records, bad) = read(dir.path()).unwrap();
        assert_eq!(bad, 1);
        assert_eq!(by_day(&records)["2026-11-27"].answers, 3);
    }

    #[test]
    fn cpu_time_is_read_past_a_name_with_spaces() {
        let stat = "1234 (my prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0";
        assert_eq!(cpu_of_stat(stat), Some(3.1));
        assert!(cpu_seconds() >= 0.0);
    }

    #[test]
    fn counts_add_per_model() {
        let mut a = Counts::default();
        let mut b = Counts::default();
        b.generators.insert(
            "m".into(),
            ModelCounts {
                answers: 1,
                prompt_tokens: 10,
                generated_tokens: 2,
            },
        );
        a.add(&b);
        a.add(&b);
        assert_eq!(a.generators["m"].prompt_tokens, 20);
    }
}

//! The answer log: every answer kept with its question, passages and citations, so that a
//! user's ratings and corrections can turn them into fine-tuning data (`export finetune`).
//!
//! One JSON file per answer, `DATA_DIR/answers/YYYY-MM-DD/ID.json`, written whole and
//! renamed into place (a crash never leaves half an entry); feedback rewrites the file the
//! same way. Forgetting removes files, and whole days at once: nothing is kept elsewhere.
//! `--no-answer-log` (`answer_log = "off"`) keeps nothing at all.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sovrag_generate::{Answer, Passage};

use crate::files::write_json;

/// The log's folder in the data dir.
pub const DIR: &str = "answers";

/// A user's verdict on an answer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Up,
    Down,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feedback {
    pub rating: Rating,
    /// The answer the user would have wanted; it replaces the model's in an export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// One kept answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub answer_id: String,
    /// Unix seconds.
    pub created: u64,
    pub question: String,
    /// The generator that wrote it.
    pub model: String,
    /// The passages in the prompt, numbered from 1 as the answer's markers count them.
    pub passages: Vec<Passage>,
    pub answer: String,
    pub abstained: bool,
    pub citations: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
}

pub struct AnswerLog {
    dir: PathBuf,
}

/// An id names a file: only these characters, so a request can never name another path.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A day folder's name, `YYYY-MM-DD`.
fn is_day(name: &str) -> bool {
    chrono::NaiveDate::parse_from_str(name, "%Y-%m-%d").is_ok()
}

impl AnswerLog {
    pub fn new(data_dir: &Path) -> Self {
        AnswerLog {
            dir: data_dir.join(DIR),
        }
    }

    /// A new id: the time to the millisecond, the process and a counter, so ids never
    /// collide between a server and a CLI run, and sort by time.
    fn new_id() -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("a{ms:x}-{:x}{n:x}", std::process::id())
    }

    /// Keeps `answer` to `question` from `passages` (those in the prompt come first) and
    /// returns its id.
    pub fn keep(
        &self,
        question: &str,
        model: &str,
        passages: &[Passage],
        answer: &Answer,
    ) -> Result<String> {
        let entry = Entry {
            answer_id: Self::new_id(),
            created: crate::usage::now_secs(),
            question: question.to_owned(),
            model: model.to_owned(),
            passages: passages
                .iter()
                .take(answer.passages_used)
                .cloned()
                .collect(),
            answer: answer.answer.clone(),
            abstained: answer.abstained,
            citations: serde_json::to_value(&answer.citations)?,
            feedback: None,
        };
        let day = self.dir.join(crate::usage::today());
        std::fs::create_dir_all(&day).with_context(|| format!("creating {}", day.display()))?;
        write_json(&day.join(format!("{}.json", entry.answer_id)), &entry)?;
        Ok(entry.answer_id)
    }

    /// The file of answer `id`, if it is kept.
    fn find(&self, id: &str) -> Option<PathBuf> {
        if !valid_id(id) {
            return None;
        }
        let mut days = self.days().ok()?;
        // Newest first: feedback usually follows its answer closely.
        days.reverse();
        days.into_iter()
            .map(|d| d.join(format!("{id}.json")))
            .find(|p| p.is_file())
    }

    /// The day folders, oldest first.
    fn days(&self) -> Result<Vec<PathBuf>> {
        let mut days: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str().is_some_and(is_day))
                .map(|e| e.path())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        days.sort();
        Ok(days)
    }

    pub fn get(&self, id: &str) -> Result<Option<Entry>> {
        let Some(path) = self.find(id) else {
            return Ok(None);
        };
        read(&path).map(Some)
    }

    /// Records feedback on answer `id`; `None` when no such answer is kept.
    pub fn feedback(
        &self,
        id: &str,
        rating: Rating,
        correction: Option<String>,
    ) -> Result<Option<Entry>> {
        let Some(path) = self.find(id) else {
            return Ok(None);
        };
        let mut entry = read(&path)?;
        entry.feedback = Some(Feedback {
            rating,
            correction: correction.filter(|c| !c.trim().is_empty()),
            at: crate::usage::now_secs(),
        });
        write_json(&path, &entry)?;
        Ok(Some(entry))
    }

    /// Removes answer `id`; false when no such answer is kept.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let Some(path) = self.find(id) else {
            return Ok(false);
        };
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        Ok(true)
    }

    /// Removes every answer kept on a day before `day` (`YYYY-MM-DD`); returns how many.
    pub fn forget_before(&self, day: &str) -> Result<usize> {
        anyhow::ensure!(is_day(day), "`{day}` is not a date: write it as YYYY-MM-DD");
        let mut removed = 0;
        for d in self.days()? {
            if d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n < day)
            {
                removed += std::fs::read_dir(&d)?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count();
                std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
        Ok(removed)
    }

    /// Every kept answer, oldest first. An entry that cannot be read is skipped with a
    /// warning: one damaged file must not stop an export.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for d in self.days()? {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&d)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for f in files {
                match read(&f) {
                    Ok(e) => out.push(e),
                    Err(e) => tracing::warn!("{e:#}"),
                }
            }
        }
        out.sort_by(|a, b| (a.created, &a.answer_id).cmp(&(b.created, &b.answer_id)));
        Ok(out)
    }
}

fn read(path: &Path) -> Result<Entry> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Which kept answers `export finetune` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MinRating {
    /// Every answer except those rated down and not corrected.
    None,
    /// Only answers rated up, and corrected ones.
    Up,
}

/// One chat-format fine-tuning example per answer chosen by `min`: the system message and
/// the user's turn exactly as the generator is prompted, and the answer (the correction
/// where the user gave one) as the assistant's turn. Returns the JSONL text and its count.
pub fn finetune_jsonl(entries: &[Entry], min: MinRating) -> Result<(String, usize)> {
    let mut out = String::new();
    let mut n = 0;
    for e in entries {
        let correction = e.feedback.as_ref().and_then(|f| f.correction.clone());
        let rating = e.feedback.as_ref().map(|f| f.rating);
        let keep = correction.is_some()
            || match min {
                MinRating::None => rating != Some(Rating::Down),
                MinRating::Up => rating == Some(Rating::Up),
            };
        if !keep {
            continue;
        }
        let (system, user) = sovrag_generate::prose_chat(&e.question, &e.passages);
        let line = serde_json::json!({"messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": correction.unwrap_or_else(|| e.answer.clone())},
        ]});
        out.push_str(&serde_json::to_string(&line)?);
        out.push('\n');
        n += 1;
    }
    Ok((out, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_name_another_path() {
        assert!(valid_id("a18c0f3e2b1-1f2a0"));
        for bad in ["", "../x", "a/b", "A1", "a.json", &"a".repeat(41)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    fn entry(id: &str, feedback: Option<Feedback>) -> Entry {
        Entry {
            answer_id: id.into(),
            created: 1,
            question: "When does the owl hunt?".into(),
            model: "m".into(),
            passages: vec![Passage {
                path: "owls.md".into(),
                start_line: 1,
                end_line: 3,
                text: "The owl hunts at dusk.".into(),
                ..Passage::default()
            }],
            answer: "At dusk [1].".into(),
            abstained: false,
            citations: serde_json::Value::Null,
            feedback,
        }
    }

    #[test]
    fn export_takes_corrections_and_leaves_out_what_was_rated_down() {
        let fb = |rating, correction: Option<&str>| {
            Some(Feedback {
                rating,
                correction: correction.map(Into::into),
                at: 2,
            })
        };
        let entries = vec![
            entry("a1", None),
            entry("a2", fb(Rating::Down, None)),
            entry("a3", fb(Rating::Down, Some("At dusk, over fields [1]."))),
            entry("a4", fb(Rating::Up, None)),
        ];
        let (all, n) = finetune_jsonl(&entries, MinRating::None).unwrap();
        assert_eq!(n, 3);
        let lines: Vec<serde_json::Value> = all
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[1]["messages"][2]["content"],
            "At dusk, over fields [1]."
        );
        let user = lines[0]["messages"][1]["content"].as_str().unwrap();
        assert!(
            user.contains("[1] (owls.md:1-3)\nThe owl hunts at dusk."),
            "{user}"
        );
        assert!(
            user.ends_with("Question: When does the owl hunt?"),
            "{user}"
        );
        let (_, up) = finetune_jsonl(&entries, MinRating::Up).unwrap();
        assert_eq!(up, 2);
    }
}

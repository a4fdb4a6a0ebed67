//! The answer log and the fine-tuning flywheel: answers kept with an id, rated and corrected
//! over HTTP, exported as chat-format JSONL, removed from disk on request; nothing kept when
//! the log is off.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::util::*;

/// Every file kept under `data/answers`.
fn kept(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(days) = std::fs::read_dir(data.join("answers")) else {
        return out;
    };
    for d in days {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[test]
fn answers_are_kept_rated_exported_and_removed() {
    let data = tempfile::tempdir().unwrap();
    let docs = owl_docs();
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    let server = Server::start(data.path(), &["--gguf", &tiny_gguf()]);

    let (status, a) = server.post(
        "/v1/ask",
        &json!({"question": "When does the barn owl hunt?", "k": 1}),
    );
    assert_eq!(status, 200, "{a}");
    let id = a["answer_id"].as_str().expect("answer_id").to_owned();
    let files = kept(data.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let entry: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(entry["question"], "When does the barn owl hunt?");
    assert_eq!(entry["answer"], a["answer"]);
    assert!(
        entry["passages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("dusk"),
        "{entry}"
    );

    // Feedback round trip; a chat completion's id names its answer too.
    let (status, fb) = server.post(
        "/v1/feedback",
        &json!({"answer_id": id, "rating": "down", "correction": "At dusk [1]."}),
    );
    assert_eq!(status, 200, "{fb}");
    let (status, got) = server.get(&format!("/v1/answers/{id}")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(got["feedback"]["rating"], "down");
    assert_eq!(got["feedback"]["correction"], "At dusk [1].");
    for (body, want) in [
        (json!({"answer_id": "a0-0", "rating": "up"}), 404),
        (json!({"answer_id": "../../etc", "rating": "up"}), 404),
        (json!({"answer_id": id, "rating": "sideways"}), 400),
        (json!({"rating": "up"}), 400),
    ] {
        let (status, err) = server.post("/v1/feedback", &body);
        assert_eq!(status, want, "{body}: {err}");
        assert!(err["error"]["message"].is_string(), "{err}");
    }

    // A second answer through the chat endpoint, rated up.
    let (status, chat) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Where does the barn owl hunt?"}]}),
    );
    assert_eq!(status, 200, "{chat}");
    let chat_id = chat["sovrag"]["answer_id"]
        .as_str()
        .expect("answer_id")
        .to_owned();
    let (status, _) = server.post(
        "/v1/feedback",
        &json!({"answer_id": chat_id, "rating": "up"}),
    );
    assert_eq!(status, 200);

    // The export: one line per answer, the exact chat shape, the correction in place of
    // the model's answer.
    let out = data.path().join("ft.jsonl");
    run_ok(
        sovrag(data.path())
            .args(["export", "finetune", "--out"])
            .arg(&out),
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in &lines {
        let m = l["messages"].as_array().unwrap();
        assert_eq!(l.as_object().unwrap().len(), 1, "{l}");
        let roles: Vec<&str> = m.iter().map(|x| x["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
        assert!(
            m.iter()
                .all(|x| x.as_object().unwrap().len() == 2 && x["content"].is_string())
        );
        assert!(m[1]["content"].as_str().unwrap().contains("[1] ("), "{l}");
    }
    assert_eq!(lines[0]["messages"][2]["content"], "At dusk [1].");
    assert!(
        lines[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .ends_with("When does the barn owl hunt?")
    );
    let up = data.path().join("up.jsonl");
    run_ok(
        sovrag(data.path())
            .args(["export", "finetune", "--min-rating", "up", "--out"])
            .arg(&up),
    );
    assert_eq!(std::fs::read_to_string(&up).unwrap().lines().count(), 2);

    // Removal is from disk.
    let (status, _) = server.request("DELETE", &format!("/v1/answers/{id}"), &[]);
    assert_eq!(status, 204);
    assert_eq!(kept(data.path()).len(), 1);
    let (status, _) = server.request("DELETE", &format!("/v1/answers/{id}"), &[]);
    assert_eq!(status, 404);
    let tomorrow = tomorrow();
    let out = run_ok(sovrag(data.path()).args(["forget", "--before", &tomorrow]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 1"),
        "{out:?}"
    );
    assert!(kept(data.path()).is_empty());
    let bad = sovrag(data.path())
        .args(["forget", "--before", "yesterday"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// Tomorrow's date, `YYYY-MM-DD`, from `date` (the tests do not depend on a date crate).
fn tomorrow() -> String {
    let out = std::process::Command::new("date")
        .args(["-d", "tomorrow", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn with_the_log_off_nothing_is_kept() {
    let data = tempfile::tempdir().unwrap();
    let docs = owl_docs();
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    let out = run_ok(sovrag(data.path()).args([
        "--no-answer-log",
        "--gguf",
        &tiny_gguf(),
        "ask",
        "--json",
        "When does the barn owl hunt?",
    ]));
    let a = json_of(&out);
    assert!(a["answer"].is_string());
    assert_eq!(a.get("answer_id"), None, "{a}");
    let server = Server::start(
        data.path(),
        &["--gguf", &tiny_gguf(), "--answer-log", "off"],
    );
    let (status, a) = server.post(
        "/v1/ask",
        &json!({"question": "When does the barn owl hunt?", "k": 1}),
    );
    assert_eq!(status, 200, "{a}");
    assert_eq!(a.get("answer_id"), None, "{a}");
    assert!(!data.path().join("answers").exists());
    // The work is still counted.
    drop(server);
    let r = json_of(&run_ok(sovrag(data.path()).args(["report", "--json"])));
    assert!(r["totals"]["answers"].as_u64().unwrap() >= 1, "{r}");
}

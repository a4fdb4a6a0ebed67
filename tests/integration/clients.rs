//! Real clients against a real server (tests/clients/clients.py): the official `openai`
//! package, the `llm` CLI, schemathesis on `/openapi.json`, nginx in front of a stream, and
//! headless Chromium on the page. The venv comes from scripts/clients_venv.sh, which
//! scripts/test.sh runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::*;

const KEY: &str = "client-test-key";

#[test]
fn real_clients_work() {
    let venv = std::env::var_os("SOVRAG_CLIENTS_VENV")
        .map(PathBuf::from)
        .filter(|v| v.join("bin/python").exists())
        .unwrap_or_else(|| {
            panic!(
                "SOVRAG_CLIENTS_VENV must name the venv of the real clients: \
                 `export SOVRAG_CLIENTS_VENV=$(scripts/clients_venv.sh | tail -n 1)` \
                 (scripts/test.sh does it)"
            )
        });
    let data = tempfile::tempdir().unwrap();
    let docs = owl_docs();
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    let gguf = tiny_gguf();
    let model = Path::new(&gguf)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // Verification off: the page and nginx checks watch tokens arrive one by one. A key: the
    // checks include the refusals without one.
    let server = Server::start(
        data.path(),
        &[
            "--gguf",
            &gguf,
            "--api-key",
            KEY,
            "--verify",
            "off",
            "--max-answer-tokens",
            "60",
        ],
    );
    // schemathesis sends hundreds of requests, many of them answers: a server of its own
    // whose answers stop at 8 tokens keeps that to seconds.
    let data2 = tempfile::tempdir().unwrap();
    run_ok(sovrag(data2.path()).arg("index").arg(docs.path()));
    let fuzzed = Server::start(
        data2.path(),
        &[
            "--gguf",
            &gguf,
            "--api-key",
            KEY,
            "--max-answer-tokens",
            "8",
        ],
    );
    let artefacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clients");
    let out = Command::new(venv.join("bin/python"))
        .env("SOVRAG_SCHEMATHESIS_BASE", &fuzzed.base)
        .arg(repo().join("tests/clients/clients.py"))
        .args([server.base.as_str(), KEY, &model])
        .arg(&artefacts)
        .output()
        .expect("run tests/clients/clients.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all client checks passed"),
        "real clients failed ({}):\n{stdout}\n{}\nartefacts in {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        artefacts.display()
    );
}

//! `serve --watch`: created, edited and deleted files show up in search within seconds.

use std::time::Duration;

use serde_json::json;

use crate::util::*;

fn hits_for(server: &Server, q: &str) -> Vec<serde_json::Value> {
    let (status, body) = server.post("/v1/query", &json!({"query": q, "k": 20}));
    assert_eq!(status, 200, "{body}");
    body["hits"].as_array().unwrap().clone()
}

fn found(server: &Server, q: &str, file: &str, word: &str) -> bool {
    hits_for(server, q).iter().any(|h| {
        h["path"].as_str().unwrap().ends_with(file) && h["text"].as_str().unwrap().contains(word)
    })
}

#[test]
fn watched_folder_follows_create_edit_delete() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::write(
        d.join("base.md"),
        "# Base\n\nA file present before the server starts.\n",
    )
    .unwrap();
    let server = Server::start(data.path(), &["--watch", d.to_str().unwrap()]);
    // Generous: the suite runs tests in parallel on 2 cores; freshness is measured by a benchmark.
    let limit = Duration::from_secs(60);
    wait_until(limit, "initial file indexed", || {
        found(&server, "file present before", "base.md", "present")
    });

    std::fs::write(
        d.join("new.md"),
        "# Zebras\n\nZebras graze on the quillwort meadow.\n",
    )
    .unwrap();
    wait_until(limit, "new file searchable", || {
        found(&server, "quillwort meadow", "new.md", "quillwort")
    });

    std::fs::write(
        d.join("new.md"),
        "# Zebras\n\nZebras now graze by the saltmarsh.\n",
    )
    .unwrap();
    wait_until(limit, "edit searchable", || {
        found(&server, "saltmarsh", "new.md", "saltmarsh")
    });
    let stale: Vec<_> = hits_for(&server, "quillwort meadow")
        .into_iter()
        .filter(|h| h["text"].as_str().unwrap().contains("quillwort"))
        .collect();
    assert!(
        stale.is_empty(),
        "old text of an edited file still matches: {stale:?}"
    );

    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(
        d.join("sub").join("deep.txt"),
        "Ptarmigans turn white in winter.\n",
    )
    .unwrap();
    wait_until(limit, "file in a new folder", || {
        found(&server, "ptarmigans", "deep.txt", "Ptarmigans")
    });

    std::fs::remove_file(d.join("new.md")).unwrap();
    std::fs::remove_dir_all(d.join("sub")).unwrap();
    wait_until(limit, "deleted files gone", || {
        !hits_for(&server, "zebras saltmarsh ptarmigans")
            .iter()
            .any(|h| {
                let p = h["path"].as_str().unwrap();
                p.ends_with("new.md") || p.ends_with("deep.txt")
            })
    });
    let (_, status) = server.get("/v1/status").unwrap();
    assert_eq!(status["documents"], 1, "{status}");
}

#[test]
fn rename_and_move_keep_vectors_and_edits_embed_only_changed_chunks() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let d = docs.path();
    let para = |i: usize| {
        format!("Paragraph {i} about heron number {i} wading in the estuary at dawn.\n\n")
    };
    let body: String = (0..40).map(para).collect();
    std::fs::write(d.join("herons.md"), format!("# Herons\n\n{body}")).unwrap();
    let server = Server::start(data.path(), &["--watch", d.to_str().unwrap()]);
    let limit = Duration::from_secs(60);
    let status = || server.get("/v1/status").unwrap().1;
    wait_until(limit, "initial index", || {
        status()["documents"] == 1 && status()["indexing"] == false
    });
    let embedded = status()["texts_embedded"].as_u64().unwrap();
    let chunks = status()["chunks"].as_u64().unwrap();
    assert!(chunks >= 3, "the file spans several chunks: {}", status());

    std::fs::create_dir(d.join("birds")).unwrap();
    std::fs::rename(d.join("herons.md"), d.join("birds").join("waders.md")).unwrap();
    wait_until(limit, "move applied", || {
        found(&server, "heron estuary", "waders.md", "heron")
    });
    wait_until(limit, "old path gone", || {
        !hits_for(&server, "heron estuary")
            .iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("herons.md"))
    });
    let s = status();
    assert_eq!(
        s["texts_embedded"].as_u64().unwrap(),
        embedded,
        "a move re-embedded text: {s}"
    );
    assert_eq!(
        s["chunks"].as_u64().unwrap(),
        chunks,
        "no duplicate or lost chunks: {s}"
    );

    // Change the last paragraph only: only the chunk(s) holding it are embedded again.
    let edited = format!(
        "# Herons\n\n{}Paragraph 39 now says egrets.\n",
        (0..39).map(para).collect::<String>()
    );
    std::fs::write(d.join("birds").join("waders.md"), edited).unwrap();
    wait_until(limit, "edit applied", || {
        found(&server, "egrets", "waders.md", "egrets")
    });
    let again = status()["texts_embedded"].as_u64().unwrap() - embedded;
    assert!(
        again >= 1 && again < chunks,
        "{again} of {chunks} chunks re-embedded for a one-line edit"
    );
}

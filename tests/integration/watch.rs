//! `serve --watch`: created, edited and deleted files show up in search within seconds.

use std::time::Duration;

use serde_json::json;

use crate::util::*;

pub(crate) fn hits_for(server: &Server, q: &str) -> Vec<serde_json::Value> {
    let (status, body) = server.post("/v1/query", &json!({"query": q, "k": 20}));
    assert_eq!(status, 200, "{body}");
    body["hits"].as_array().unwrap().clone()
}

pub(crate) fn found(server: &Server, q: &str, file: &str, word: &str) -> bool {
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
    // From its first answer on, the server says it is indexing until the start-up reconcile
    // is done: a client that waits for idle never sees an idle, empty index instead.
    let first = server.get("/v1/status").unwrap().1;
    assert!(
        first["indexing"] == true || first["documents"] == 1,
        "{first}"
    );
    assert_eq!(settled(&server)["documents"], 1);
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

pub(crate) fn settled(server: &Server) -> serde_json::Value {
    let mut s = server.get("/v1/status").unwrap().1;
    wait_until(Duration::from_secs(60), "the daemon to go idle", || {
        s = server.get("/v1/status").unwrap().1;
        s["indexing"] == false && s["queue"] == 0
    });
    s
}

fn verify_clean(data: &std::path::Path, docs: &std::path::Path, args: &[&str]) {
    let out = sovrag(data)
        .args(["verify", "--json"])
        .args(args)
        .arg(docs)
        .output()
        .unwrap();
    let v = json_of(&out);
    assert!(
        out.status.success() && v["violations"].as_array().unwrap().is_empty(),
        "index differs from the files: {v}"
    );
}

#[test]
fn hostile_files_never_stop_the_daemon_and_are_reported() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::write(
        d.join("good.md"),
        "# Lighthouse\n\nThe keeper trims the wick.\n",
    )
    .unwrap();
    let server = Server::start(
        data.path(),
        &["--watch", d.to_str().unwrap(), "--max-file-mb", "1"],
    );
    let limit = Duration::from_secs(60);
    wait_until(limit, "initial index", || {
        found(&server, "keeper wick", "good.md", "wick")
    });

    assert!(
        std::process::Command::new("mkfifo")
            .arg(d.join("pipe.txt"))
            .status()
            .unwrap()
            .success()
    );
    let _socket = std::os::unix::net::UnixListener::bind(d.join("socket.txt")).unwrap();
    std::os::unix::fs::symlink(d.join("loop-b.md"), d.join("loop-a.md")).unwrap();
    std::os::unix::fs::symlink(d.join("loop-a.md"), d.join("loop-b.md")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(d, d.join("sub").join("up")).unwrap();
    std::fs::write(d.join("big.txt"), "big file line\n".repeat(100_000)).unwrap();
    std::fs::write(d.join("blob.txt"), b"\0\x01\x02 not text").unwrap();
    std::fs::write(d.join("empty.txt"), b"").unwrap();
    std::fs::write(d.join("latin1.txt"), b"Caf\xe9: the marmot stew is cold.\n").unwrap();
    // Unreadable, unless the tests run as root (who reads anything): then it is just indexed.
    let locked = d.join("locked.md");
    std::fs::write(&locked, "# Locked\n\nNobody may read this.\n").unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let unreadable = std::fs::read(&locked).is_err();
    // A file that was indexed and is now emptied must lose its old text.
    std::fs::write(d.join("good.md"), b"").unwrap();
    std::fs::write(
        d.join("after.md"),
        "# After\n\nNarwhals still get indexed.\n",
    )
    .unwrap();
    wait_until(limit, "a good file after the hostile ones", || {
        found(&server, "narwhals", "after.md", "Narwhals")
    });
    wait_until(limit, "latin-1 file decoded", || {
        found(&server, "marmot stew", "latin1.txt", "marmot")
    });
    wait_until(limit, "emptied file's old text gone", || {
        !hits_for(&server, "keeper trims the wick")
            .iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("good.md"))
    });
    let s = settled(&server);
    let problems = s["problems"].as_object().unwrap();
    let problem = |name: &str| {
        problems
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, v)| v.as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no problem reported for {name}: {s}"))
    };
    assert!(problem("big.txt").contains("limit"));
    assert!(problem("blob.txt").contains("binary"));
    assert!(problem("empty.txt").contains("empty"));
    assert!(problem("latin1.txt").contains("UTF-8"));
    assert!(problem("pipe.txt").contains("not a regular file"));
    if unreadable {
        assert!(problem("locked.md").contains("Permission denied"));
    }
    assert!(s["problem_count"].as_u64().unwrap() >= 5, "{s}");
    let expected = if unreadable { 2 } else { 3 };
    assert_eq!(
        s["documents"], expected,
        "after.md, latin1.txt (and locked.md as root): {s}"
    );
    drop(server);
    verify_clean(data.path(), d, &["--max-file-mb", "1"]);
}

#[test]
fn every_kind_of_change_and_changes_made_while_down() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let (d, o) = (docs.path(), outside.path());
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("a.md"), "# A\n\nAlbatross notes.\n").unwrap();
    std::fs::write(d.join("sub").join("b.md"), "# B\n\nBittern version zero.\n").unwrap();
    std::fs::write(o.join("c.md"), "# C\n\nCormorants live outside.\n").unwrap();
    let server = Server::start(data.path(), &["--watch", d.to_str().unwrap()]);
    let limit = Duration::from_secs(60);
    wait_until(limit, "initial index", || {
        found(&server, "bittern", "b.md", "zero")
    });

    // An editor's atomic save: a hidden temp file renamed over the original.
    std::fs::write(d.join(".a.md.swp"), "# A\n\nAlbatross now kestrel.\n").unwrap();
    std::fs::rename(d.join(".a.md.swp"), d.join("a.md")).unwrap();
    // Rapid saves, faster than the debounce: the last one wins.
    for v in ["one", "two", "three", "four", "five"] {
        std::fs::write(
            d.join("sub").join("b.md"),
            format!("# B\n\nBittern version {v}.\n"),
        )
        .unwrap();
    }
    wait_until(limit, "atomic save", || {
        found(&server, "kestrel", "a.md", "kestrel")
    });
    // A folder renamed, a file moved in from outside the tree.
    std::fs::rename(d.join("sub"), d.join("sub2")).unwrap();
    std::fs::rename(o.join("c.md"), d.join("c.md")).unwrap();
    wait_until(limit, "folder rename", || {
        found(&server, "bittern version", "sub2/b.md", "five")
    });
    wait_until(limit, "move into the tree", || {
        found(&server, "cormorants", "c.md", "Cormorants")
    });
    // A file moved out of the tree.
    std::fs::rename(d.join("a.md"), o.join("a.md")).unwrap();
    wait_until(limit, "move out of the tree", || {
        !hits_for(&server, "albatross kestrel")
            .iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("a.md"))
    });
    let s = settled(&server);
    assert_eq!(s["documents"], 2, "{s}");
    let old_versions: Vec<_> = hits_for(&server, "bittern version")
        .into_iter()
        .filter(|h| {
            h["path"].as_str().unwrap().ends_with("b.md")
                && !h["text"].as_str().unwrap().contains("five")
        })
        .collect();
    assert!(old_versions.is_empty(), "stale versions: {old_versions:?}");
    drop(server);

    // Changes made while the daemon is down are found by the start-up reconcile.
    std::fs::write(d.join("d.md"), "# D\n\nDippers dive in streams.\n").unwrap();
    std::fs::write(d.join("c.md"), "# C\n\nCormorants dry their wings.\n").unwrap();
    std::fs::remove_file(d.join("sub2").join("b.md")).unwrap();
    let server = Server::start(data.path(), &["--watch", d.to_str().unwrap()]);
    wait_until(limit, "new file found at start", || {
        found(&server, "dippers", "d.md", "Dippers")
    });
    let s = settled(&server);
    assert_eq!(s["documents"], 2, "c.md and d.md: {s}");
    assert!(!found(&server, "bittern", "b.md", "Bittern"));
    drop(server);
    verify_clean(data.path(), d, &[]);
}

#[test]
fn kill_9_cycles_converge_to_the_files_on_disk() {
    let out = std::process::Command::new("python3")
        .arg(repo().join("scripts").join("crash_cycle.py"))
        .args(["--cycles", "4", "--files", "20", "--bin"])
        .arg(bin())
        .env(THREADS.0, THREADS.1)
        .output()
        .expect("python3 runs scripts/crash_cycle.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("violations: 0"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

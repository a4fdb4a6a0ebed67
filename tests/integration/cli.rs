//! The command line on small folders: hostile files, sync on re-index, clear errors.

use crate::util::*;

#[test]
fn hostile_files_are_skipped_and_the_rest_is_indexed() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::write(
        d.join("good.md"),
        "# Lighthouse\n\nThe lighthouse keeper trims the wick at dusk.\n",
    )
    .unwrap();
    std::fs::write(
        d.join("latin1.txt"),
        b"Caf\xe9 menu: the pelican soup is served cold.\n",
    )
    .unwrap();
    std::fs::write(d.join("image.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    std::fs::write(d.join("empty.txt"), b"").unwrap();
    let out = run_ok(sovrag(data.path()).arg("index").arg(d));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("indexed 2 files"), "{summary}");
    assert!(summary.contains("2 skipped"), "{summary}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid UTF-8"),
        "warns about the decode: {stderr}"
    );
    assert!(
        stderr.contains("binary"),
        "says why the png was skipped: {stderr}"
    );

    let hits = json_of(&run_ok(sovrag(data.path()).args([
        "query",
        "pelican soup",
        "--json",
        "--k",
        "1",
    ])));
    let top = &hits["hits"][0];
    assert!(
        top["path"].as_str().unwrap().ends_with("latin1.txt"),
        "{hits}"
    );
    assert!(top["text"].as_str().unwrap().contains("Caf\u{fffd} menu"));
    let hits = json_of(&run_ok(sovrag(data.path()).args([
        "query",
        "lighthouse keeper",
        "--json",
    ])));
    let paths: Vec<&str> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert!(paths[0].ends_with("good.md"));
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with(".png") || p.ends_with("empty.txt"))
    );
}

#[test]
fn reindex_embeds_only_changes_and_drops_deleted_files() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let d = docs.path();
    std::fs::write(d.join("a.txt"), "Apricots ripen in July.\n").unwrap();
    std::fs::write(d.join("b.txt"), "Blueberries need acid soil.\n").unwrap();
    let first = run_ok(sovrag(data.path()).arg("index").arg(d));
    assert!(String::from_utf8_lossy(&first.stdout).contains("indexed 2 files (0 unchanged"));

    std::fs::write(d.join("b.txt"), "Blackberries grow on brambles.\n").unwrap();
    std::fs::remove_file(d.join("a.txt")).unwrap();
    let second = run_ok(sovrag(data.path()).arg("index").arg(d));
    let s = String::from_utf8_lossy(&second.stdout);
    assert!(
        s.contains("indexed 1 files (0 unchanged, 0 skipped, 1 removed)"),
        "{s}"
    );

    let third = run_ok(sovrag(data.path()).arg("index").arg(d));
    assert!(String::from_utf8_lossy(&third.stdout).contains("indexed 0 files (1 unchanged"));

    let hits = json_of(&run_ok(sovrag(data.path()).args([
        "query",
        "apricots blueberries",
        "--json",
    ])));
    for h in hits["hits"].as_array().unwrap() {
        let text = h["text"].as_str().unwrap();
        assert!(
            !text.contains("Apricots") && !text.contains("Blueberries"),
            "stale hit {h}"
        );
    }
    let status = json_of(&run_ok(sovrag(data.path()).args(["status", "--json"])));
    assert_eq!(status["documents"], 1);
}

#[test]
fn missing_models_name_the_setup_command() {
    let data = tempfile::tempdir().unwrap();
    let out = sovrag(data.path())
        .args(["query", "anything"])
        .env("SOVRAG_MODELS", data.path().join("no-models"))
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/fetch_models.py"), "{err}");
}

#[test]
fn non_loopback_bind_without_key_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let out = sovrag(data.path())
        .args(["serve", "--bind", "0.0.0.0:0"])
        .env_remove("SOVRAG_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without an API key"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let data = tempfile::tempdir().unwrap();
    let out = sovrag(data.path()).args(["query"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = sovrag(data.path()).args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A word that only one file contains (an identifier, an error code) brings that file first
/// in the default hybrid search, however close other files are in vector space: the notes
/// here share one small vocabulary, so their vectors are all near each other and near none
/// of the identifiers.
#[test]
fn an_identifier_in_one_file_ranks_that_file_first() {
    const WORDS: [&str; 12] = [
        "heron", "estuary", "lantern", "quarry", "meadow", "copper", "glacier", "orchard",
        "saffron", "tundra", "basalt", "lichen",
    ];
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    // A fixed linear congruential sequence: the same notes on every run.
    let mut state: u64 = 7;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let ids: Vec<String> = (1..=40).map(|i| format!("m{i}v{}", 100 + i)).collect();
    for (i, id) in ids.iter().enumerate() {
        let words: Vec<&str> = (0..5 + next(55))
            .map(|_| WORDS[next(12) as usize])
            .collect();
        let note = format!("# Note {id}\n\nMarker {id} says {}.\n", words.join(" "));
        std::fs::write(docs.path().join(format!("f{}.md", i + 1)), note).unwrap();
    }
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    let server = Server::start(data.path(), &[]);
    let misses: Vec<String> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let (status, body) = server.post("/v1/query", &serde_json::json!({"query": id}));
            assert_eq!(status, 200, "{body}");
            let top = body["hits"][0]["path"].as_str().unwrap_or_default();
            let want = format!("/f{}.md", i + 1);
            (!top.ends_with(&want)).then(|| format!("{id}: first hit {top}"))
        })
        .collect();
    assert!(misses.is_empty(), "{misses:#?}");
}

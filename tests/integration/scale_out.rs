//! An index on object storage (S3; CI runs moto on loopback, see scripts/test.sh): the same
//! answers as on disk, a writer and replicas following one table, one writer per prefix, a
//! killed writer, and the check that refuses a store which ignores conditional PUTs.
//!
//! Each test needs SOVRAG_TEST_S3_ENDPOINT (with a bucket `sovrag-test`); without it, it
//! says so loudly and passes: outside CI there may be no S3 server.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{Server, THREADS, bin, json_of, repo, run_ok, tiny_gguf, wait_until};
use crate::watch::{found, hits_for, settled};

const BUCKET: &str = "sovrag-test";

fn endpoint() -> Option<String> {
    let e = std::env::var("SOVRAG_TEST_S3_ENDPOINT").ok();
    if e.is_none() {
        eprintln!(
            "\n*** SKIPPED: SOVRAG_TEST_S3_ENDPOINT is not set, so the object-storage tests \
             did not run (scripts/test.sh starts moto and sets it) ***\n"
        );
    }
    e
}

/// A fresh prefix in the test bucket.
fn prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3://{BUCKET}/{name}-{}-{nanos}", std::process::id())
}

/// The environment every node of a store at `endpoint` runs with.
fn s3_env(c: &mut Command, endpoint: &str) {
    c.env("SOVRAG_S3_ENDPOINT", endpoint)
        .env("SOVRAG_S3_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE");
}

/// A node of the index at `uri`, its own state in `own`.
fn node(endpoint: &str, uri: &str, own: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("--data-dir")
        .arg(uri)
        .arg("--cache-dir")
        .arg(own)
        .env("XDG_CONFIG_HOME", own.join("no-config"))
        .env_remove("SOVRAG_CONFIG")
        .env(THREADS.0, THREADS.1)
        // Servers load their generator at start: the smallest will do here.
        .env("SOVRAG_GGUF", tiny_gguf());
    s3_env(&mut c, endpoint);
    c
}

/// Runs a command that must fail; its stderr.
fn refused(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "succeeded, but should not have: {err}"
    );
    err
}

/// What identifies each hit and its scores, best first (ties by place: two indexes built
/// in different orders may break a tie differently), to compare two indexes' answers.
fn ranked(out: &std::process::Output) -> Vec<(String, u64, u64, String)> {
    let mut hits: Vec<_> = json_of(out)["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let score = |k: &str| h[k].as_f64().map_or("-".into(), |s| format!("{s:.4}"));
            (
                h["path"].as_str().unwrap().to_owned(),
                h["start_line"].as_u64().unwrap(),
                h["end_line"].as_u64().unwrap(),
                format!(
                    "{} {} {}",
                    score("score"),
                    score("bm25_score"),
                    score("vector_score")
                ),
            )
        })
        .collect();
    hits.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.cmp(b)));
    hits
}

#[test]
fn an_index_on_s3_answers_as_the_same_index_on_disk() {
    let Some(ep) = endpoint() else { return };
    let corpus = repo().join("corpus");
    let corpus = corpus.to_str().unwrap();
    let local = tempfile::tempdir().unwrap();
    let writer = tempfile::tempdir().unwrap();
    let reader = tempfile::tempdir().unwrap();
    let uri = prefix("parity");
    run_ok(crate::util::sovrag(local.path()).args(["index", corpus]));
    let written = json_of(&run_ok(
        node(&ep, &uri, writer.path()).args(["index", "--json", corpus]),
    ));
    assert!(written["chunks"].as_u64().unwrap() > 50, "{written}");
    // A bucket that is not there is named as such, before anything is written.
    let err =
        refused(node(&ep, "s3://no-such-bucket-here/kb", writer.path()).args(["index", corpus]));
    assert!(
        err.contains("bucket no-such-bucket-here does not exist"),
        "{err}"
    );
    // The table is in the bucket: nothing of LanceDB's is in the writer's own folder.
    assert!(!writer.path().join("lance").exists());
    for q in [
        "How do I watch another folder?",
        "API key on a non-loopback address",
        "which PDF page does a citation point to",
        "kill -9",
    ] {
        let on_disk = ranked(&run_ok(
            crate::util::sovrag(local.path()).args(["query", "--json", q]),
        ));
        // A node that never wrote: its text index is built from the table in the bucket.
        let on_s3 = ranked(&run_ok(
            node(&ep, &uri, reader.path()).args(["query", "--json", q]),
        ));
        assert_eq!(on_disk.len(), 10, "{q}");
        assert_eq!(on_s3, on_disk, "{q}");
    }
}

#[test]
fn a_writer_and_two_replicas_follow_one_table() {
    let Some(ep) = endpoint() else { return };
    let uri = prefix("replicas");
    let docs = tempfile::tempdir().unwrap();
    let d = docs.path();
    for (f, text) in [
        (
            "owls.md",
            "# Owls\n\nThe barn owl hunts at dusk over open fields.\n",
        ),
        (
            "wrens.md",
            "# Wrens\n\nThe wren sings loudly from the hedge.\n",
        ),
        (
            "gulls.md",
            "# Gulls\n\nHerring gulls follow the fishing boats.\n",
        ),
    ] {
        std::fs::write(d.join(f), text).unwrap();
    }
    let (w, r1, r2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let writer = Server::start_with(node(&ep, &uri, w.path()), &["--watch", d.to_str().unwrap()]);
    assert_eq!(settled(&writer)["documents"], 3);
    let follow = ["--replica", "--follow-secs", "0.5"];
    let replicas = [
        Server::start_with(node(&ep, &uri, r1.path()), &follow),
        Server::start_with(node(&ep, &uri, r2.path()), &follow),
    ];
    let store = |s: &Server| s.get("/v1/status").unwrap().1["store"].clone();
    for r in &replicas {
        let s = store(r);
        assert_eq!(s["role"], "replica", "{s}");
        // Started cold: built its text index from the table once.
        assert_eq!(s["rebuilds"], 1, "{s}");
        assert!(found(r, "barn owl", "owls.md", "barn owl"));
    }
    assert_eq!(store(&writer)["role"], "writer");

    // One writer per prefix: a second one is refused, and says what to do instead.
    let other = tempfile::tempdir().unwrap();
    let err = refused(node(&ep, &uri, other.path()).args(["index", d.to_str().unwrap()]));
    assert!(err.contains("already has a writer"), "{err}");
    assert!(err.contains("--replica"), "{err}");

    let limit = Duration::from_secs(60);
    let everywhere = |what: &str, cond: &dyn Fn(&Server) -> bool| {
        let t = Instant::now();
        wait_until(limit, what, || replicas.iter().all(cond));
        eprintln!("{what}: {:.1} s", t.elapsed().as_secs_f64());
    };
    std::fs::write(
        d.join("kestrels.md"),
        "# Kestrels\n\nKestrels hover over motorway verges.\n",
    )
    .unwrap();
    everywhere("a new file on both replicas", &|r| {
        found(r, "kestrels hover", "kestrels.md", "hover")
    });
    std::fs::rename(d.join("kestrels.md"), d.join("falcons.md")).unwrap();
    everywhere("a rename on both replicas", &|r| {
        let hits = hits_for(r, "kestrels hover");
        hits.iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("falcons.md"))
            && !hits
                .iter()
                .any(|h| h["path"].as_str().unwrap().ends_with("kestrels.md"))
    });
    std::fs::remove_file(d.join("owls.md")).unwrap();
    everywhere("a delete on both replicas", &|r| {
        !hits_for(r, "barn owl hunts")
            .iter()
            .any(|h| h["path"].as_str().unwrap().ends_with("owls.md"))
    });
    let w_version = settled(&writer)["store"]["version"].as_u64().unwrap();
    for r in &replicas {
        wait_until(limit, "the writer's version", || {
            store(r)["version"].as_u64().unwrap() >= w_version
        });
        let s = store(r);
        // Caught up by applying what changed, not by rebuilding.
        assert_eq!(s["rebuilds"], 1, "{s}");
        assert!(s["documents_applied"].as_u64().unwrap() >= 3, "{s}");
        // Read from the table: the new file's chunk, and the renamed file's (its vector
        // reused by the writer, not embedded again); a delete reads nothing.
        assert_eq!(s["rows_applied"], 2, "{s}");
        assert!(s["checked_secs_ago"].as_f64().unwrap() < 30.0, "{s}");
        let st = r.get("/v1/status").unwrap().1;
        assert_eq!(st["documents"], 3, "{st}");
    }
}

#[test]
fn a_killed_writer_leaves_the_table_whole_and_the_replica_serving() {
    let Some(ep) = endpoint() else { return };
    let mut c = Command::new("python3");
    c.arg(repo().join("scripts").join("crash_cycle.py"))
        .args([
            "--cycles",
            "3",
            "--files",
            "12",
            "--store",
            &prefix("crash"),
            "--bin",
        ])
        .arg(bin())
        .env(THREADS.0, THREADS.1);
    s3_env(&mut c, &ep);
    let out = c.output().expect("python3 runs scripts/crash_cycle.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("violations: 0"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_store_check_passes_on_moto_and_fails_where_if_none_match_is_ignored() {
    let Some(ep) = endpoint() else { return };
    let own = tempfile::tempdir().unwrap();
    let mut c = crate::util::sovrag(own.path());
    s3_env(&mut c, &ep);
    let ok = json_of(&run_ok(c.args([
        "doctor",
        "--json",
        "--store",
        &prefix("check"),
    ])));
    assert_eq!(ok["passed"], true, "{ok}");
    assert_eq!(ok["create_winners"], 1, "{ok}");

    let lax = LaxStore::start();
    let mut c = crate::util::sovrag(own.path());
    s3_env(&mut c, &lax.endpoint);
    let out = c
        .args(["doctor", "--json", "--store", "s3://lax/check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report = json_of(&out);
    assert_eq!(report["passed"], false, "{report}");
    assert!(report["create_winners"].as_u64().unwrap() > 1, "{report}");
    assert_eq!(report["stale_update_refused"], false, "{report}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not honour conditional PUTs"), "{err}");
}

static NEXT_ETAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An S3 stand-in that ignores `If-None-Match` and `If-Match`, as some stores do (npm's
/// s3rver): every PUT succeeds. Enough of S3 for the check: PUT, GET, DELETE.
struct LaxStore {
    endpoint: String,
}

impl LaxStore {
    fn start() -> LaxStore {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let objects = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            String,
            Vec<u8>,
        >::new()));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let objects = objects.clone();
                std::thread::spawn(move || serve_lax(conn, &objects));
            }
        });
        LaxStore { endpoint }
    }
}

fn serve_lax(
    conn: std::net::TcpStream,
    objects: &std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let key = path.split('?').next().unwrap_or("").to_owned();
        let mut objects = objects.lock().unwrap();
        let (status, payload): (&str, Vec<u8>) = match method.as_str() {
            "PUT" => {
                objects.insert(key, body);
                ("200 OK", Vec::new())
            }
            "GET" => match objects.get(&key) {
                Some(b) => ("200 OK", b.clone()),
                None => (
                    "404 Not Found",
                    b"<Error><Code>NoSuchKey</Code></Error>".to_vec(),
                ),
            },
            "DELETE" => {
                objects.remove(&key);
                ("204 No Content", Vec::new())
            }
            _ => ("501 Not Implemented", Vec::new()),
        };
        drop(objects);
        let etag = NEXT_ETAG.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: \"{etag}\"\r\n\
             Last-Modified: Sat, 05 Dec 2026 06:00:00 GMT\r\n\r\n",
            payload.len(),
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(&payload).is_err() {
            return;
        }
    }
}

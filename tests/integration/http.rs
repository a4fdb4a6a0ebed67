//! The HTTP API: shapes match the CLI; bad requests get a 4xx with a message, never a 5xx.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

fn wait_indexed(server: &Server, documents: u64) {
    wait_until(Duration::from_secs(120), "initial indexing", || {
        let (_, s) = server.get("/v1/status").unwrap();
        s["indexing"] == false && s["documents"].as_u64() == Some(documents)
    });
}

#[test]
fn query_and_ask_shapes_and_bad_requests() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("kettle.md"),
        "# Descaling the kettle\n\nTo descale the kettle, boil a mixture of water and white vinegar, \
         leave it for one hour, then rinse it twice with clean water.\n",
    )
    .unwrap();
    std::fs::write(
        docs.path().join("plants.md"),
        "# Watering plants\n\nWater the ferns every Tuesday. Cacti need water once a month.\n",
    )
    .unwrap();
    let server = Server::start(data.path(), &["--watch", docs.path().to_str().unwrap()]);
    wait_indexed(&server, 2);

    let (status, body) = server.get("/healthz").unwrap();
    assert_eq!((status, body), (200, json!({"status": "ok"})));

    let (status, body) = server.post(
        "/v1/query",
        &json!({"query": "how to descale a kettle", "k": 3}),
    );
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.len() <= 3);
    for key in [
        "doc_id",
        "path",
        "start_line",
        "end_line",
        "text",
        "score",
        "bm25_score",
        "vector_score",
    ] {
        assert!(hits[0].get(key).is_some(), "hit lacks {key}: {}", hits[0]);
    }
    assert!(hits[0]["path"].as_str().unwrap().ends_with("kettle.md"));

    let (status, body) = server.post(
        "/v1/ask",
        &json!({"question": "How do I descale the kettle?", "k": 2}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        !body["answer"].as_str().unwrap().trim().is_empty(),
        "{body}"
    );
    assert_eq!(body["abstained"], false, "{body}");
    let citations = body["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{body}");
    for c in citations {
        for key in ["n", "path", "start_line", "end_line", "text", "verified"] {
            assert!(c.get(key).is_some(), "citation lacks {key}: {c}");
        }
    }
    assert!(
        citations
            .iter()
            .any(|c| c["path"].as_str().unwrap().ends_with("kettle.md") && c["verified"] == true),
        "the kettle page is cited and verified: {body}"
    );

    // Nothing indexed says this: the answer abstains and lists the closest sources.
    let (status, body) = server.post(
        "/v1/ask",
        &json!({"question": "What is the boiling point of mercury in kelvin?", "k": 2}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["abstained"], true, "{body}");
    assert_eq!(
        body["answer"],
        "I could not find this in the indexed documents."
    );
    assert!(!body["sources"].as_array().unwrap().is_empty(), "{body}");

    // A schema: the answer is JSON that fits it.
    let (status, body) = server.post(
        "/v1/ask",
        &json!({
            "question": "How long should the vinegar mixture be left in the kettle?",
            "k": 2,
            "schema": {
                "type": "object",
                "properties": {"hours": {"type": "integer"}, "rinses": {"type": "integer"}},
                "required": ["hours", "rinses"],
                "additionalProperties": false
            }
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["json"]["hours"].is_i64(), "{body}");
    assert!(body["json"]["rinses"].is_i64(), "{body}");

    // Bad requests: each a 4xx with an error message.
    let too_big = vec![b'x'; (1 << 20) + 10];
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("/v1/query", "application/json", b"{not json".to_vec(), 400),
        (
            "/v1/query",
            "application/json",
            br#"{"k": 3}"#.to_vec(),
            400,
        ),
        (
            "/v1/query",
            "application/json",
            br#"{"query": "  "}"#.to_vec(),
            400,
        ),
        (
            "/v1/query",
            "application/json",
            br#"{"query": "x", "k": 0}"#.to_vec(),
            400,
        ),
        (
            "/v1/query",
            "application/json",
            br#"{"query": "x", "k": -1}"#.to_vec(),
            400,
        ),
        (
            "/v1/query",
            "application/json",
            br#"{"query": 5}"#.to_vec(),
            400,
        ),
        (
            "/v1/query",
            "text/plain",
            br#"{"query": "x"}"#.to_vec(),
            400,
        ),
        ("/v1/query", "application/json", b"\xff\xfe".to_vec(), 400),
        (
            "/v1/ask",
            "application/json",
            br#"{"query": "wrong field"}"#.to_vec(),
            400,
        ),
        (
            "/v1/ask",
            "application/json",
            br#"{"question": "x", "k": 1000}"#.to_vec(),
            400,
        ),
        (
            "/v1/ask",
            "application/json",
            br#"{"question": "x", "schema": 5}"#.to_vec(),
            400,
        ),
        ("/v1/query", "application/json", too_big, 413),
        ("/v1/nope", "application/json", b"{}".to_vec(), 404),
    ];
    for (path, ct, body, want) in cases {
        let (status, resp) = server.post_raw(path, ct, &body, None);
        assert_eq!(
            status,
            want,
            "{path} {:?} -> {resp}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        // OpenAI's error shape, on every route.
        assert!(
            resp["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no message: {resp}"
        );
        assert_eq!(resp["error"]["type"], "invalid_request_error", "{resp}");
    }
    // The server is still healthy after all that.
    assert_eq!(server.get("/healthz").unwrap().0, 200);
    let (status, _) = server.get("/").unwrap();
    assert_eq!(status, 200, "the web page is served");
}

#[test]
fn api_key_is_required_when_set() {
    let data = tempfile::tempdir().unwrap();
    let keys = data.path().join("keys.txt");
    std::fs::write(&keys, "# the team\nfrom-file\n").unwrap();
    let server = Server::start(
        data.path(),
        &[
            "--api-key",
            "s3cret",
            "--api-key",
            "other",
            "--api-key-file",
            keys.to_str().unwrap(),
            "--cors-origin",
            "https://kb.example.org",
        ],
    );
    let body = json!({"query": "anything"}).to_string();
    let (status, resp) = server.post_raw("/v1/query", "application/json", body.as_bytes(), None);
    assert_eq!(status, 401, "{resp}");
    let (status, _) = server.post_raw(
        "/v1/query",
        "application/json",
        body.as_bytes(),
        Some("wrong"),
    );
    assert_eq!(status, 401);
    let (status, resp) = server.post_raw(
        "/v1/query",
        "application/json",
        body.as_bytes(),
        Some("s3cret"),
    );
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["hits"], Value::Array(vec![]));
    // Every key given is accepted; the file's keys too, and a key revoked there stops
    // working without a restart.
    let ok = |key: &str| {
        server
            .post_raw("/v1/query", "application/json", body.as_bytes(), Some(key))
            .0
    };
    assert_eq!(
        (ok("other"), ok("from-file"), ok("# the team")),
        (200, 200, 401)
    );
    std::fs::write(&keys, "new-key\n").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&keys)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        (ok("from-file"), ok("new-key"), ok("s3cret")),
        (401, 200, 200)
    );
    // OpenAI's routes, the report, the answer log and /metrics are behind the keys too;
    // /healthz is not.
    for path in ["/v1/models", "/metrics", "/v1/report", "/v1/answers/a1-1"] {
        assert_eq!(server.get(path).unwrap().0, 401, "{path}");
    }
    assert_eq!(server.get("/healthz").unwrap().0, 200);

    // CORS: only the origin allowed, by name, never `*`.
    let (status, h) = server.request(
        "OPTIONS",
        "/v1/query",
        &[
            ("Origin", "https://kb.example.org"),
            ("Access-Control-Request-Method", "POST"),
        ],
    );
    assert_eq!(status, 204);
    assert_eq!(h["access-control-allow-origin"], "https://kb.example.org");
    assert!(
        h["access-control-allow-headers"].contains("authorization"),
        "{h:?}"
    );
    let (status, h) = server.request(
        "OPTIONS",
        "/v1/query",
        &[
            ("Origin", "https://evil.example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
    );
    assert_ne!(status, 204);
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
    let (_, h) = server.request("GET", "/healthz", &[("Origin", "https://kb.example.org")]);
    assert_eq!(h["access-control-allow-origin"], "https://kb.example.org");
    let (_, h) = server.request("GET", "/healthz", &[("Origin", "https://evil.example.com")]);
    assert!(!h.contains_key("access-control-allow-origin"), "{h:?}");
}

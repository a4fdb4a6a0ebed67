//! The OpenAI-compatible endpoints: chat completions whole and streamed, models and the
//! hot swap between them, embeddings; and `POST /v1/ask` streamed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

fn kettle_server(data: &std::path::Path, docs: &std::path::Path) -> Server {
    std::fs::write(
        docs.join("kettle.md"),
        "# Descaling the kettle\n\nTo descale the kettle, boil a mixture of water and white vinegar, \
         leave it for one hour, then rinse it twice with clean water.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("plants.md"),
        "# Watering plants\n\nWater the ferns every Tuesday. Cacti need water once a month.\n",
    )
    .unwrap();
    run_ok(sovrag(data).arg("index").arg(docs));
    Server::start(data, &[])
}

#[test]
fn chat_completions_whole_and_streamed_agree_and_cite() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let server = kettle_server(data.path(), docs.path());
    let ask = json!({
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "How do I descale the kettle?"}
        ],
        // Fields sovrag does not use are ignored, as OpenAI clients send them.
        "user": "someone", "presence_penalty": 0, "n": 1
    });

    let (status, whole) = server.post("/v1/chat/completions", &ask);
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    let (_, models) = server.get("/v1/models").unwrap();
    assert_eq!(whole["model"], models["data"][0]["id"], "{models}");
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(content.contains("vinegar"), "{whole}");
    let u = &whole["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    // Every marker is an annotation over its own characters, pointing at a document that
    // opens.
    let notes = choice["message"]["annotations"].as_array().unwrap();
    assert!(!notes.is_empty(), "{whole}");
    assert_marked(content, &choice["message"]["annotations"]);
    for a in notes {
        let c = &a["url_citation"];
        let url = c["url"].as_str().unwrap();
        let doc = url.split('#').next().unwrap();
        let (status, body) = server.get(doc).unwrap();
        assert_eq!(status, 200, "{url}: {body}");
        assert_eq!(body["path"], c["title"]);
    }
    let sources = whole["sources"].as_array().unwrap();
    assert!(
        sources[0]["path"].as_str().unwrap().ends_with("kettle.md"),
        "{whole}"
    );

    // Streamed: the same answer, in chunks, ending as OpenAI's streams end.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = server.post_events("/v1/chat/completions", &streamed);
    assert_eq!(events.status, 200);
    assert!(
        events.content_type.starts_with("text/event-stream"),
        "{events:?}"
    );
    assert_eq!(events.accel_buffering, "no");
    assert_eq!(events.data.last().map(String::as_str), Some("[DONE]"));
    // The stream ends with the answer, not at the next keep-alive.
    let tail = events.closed_after_done.unwrap();
    assert!(tail < Duration::from_secs(2), "open {tail:?} after [DONE]");
    let chunks = events.json();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["sources"], whole["sources"]);
    let streamed = events.content();
    assert!(streamed.contains("vinegar"), "{:?}", events.data);
    let finished: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finished.len(), 1, "{:?}", events.data);
    // What streamed is the whole answer: the annotations sent last fall on its markers.
    assert_marked(
        &streamed,
        &finished[0]["choices"][0]["delta"]["annotations"],
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );

    // The native endpoint streams the same way.
    let events = server.post_events(
        "/v1/ask",
        &json!({"question": "How do I descale the kettle?", "stream": true}),
    );
    assert_eq!(events.status, 200);
    assert!(events.content().contains("vinegar"), "{:?}", events.data);
    let last = events.json();
    let last = last
        .iter()
        .rev()
        .find(|c| !c["choices"][0]["finish_reason"].is_null());
    assert_marked(
        &events.content(),
        &last.unwrap()["choices"][0]["delta"]["annotations"],
    );

    // A JSON answer that fits a schema.
    let (status, body) = server.post(
        "/v1/chat/completions",
        &json!({
            "messages": [{"role": "user", "content": "How many hours is the vinegar left in the kettle?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": {
                "type": "object", "properties": {"hours": {"type": "integer"}},
                "required": ["hours"], "additionalProperties": false}}}
        }),
    );
    assert_eq!(status, 200, "{body}");
    let json: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(json["hours"].is_i64(), "{body}");

    // Errors in OpenAI's shape.
    for (body, status, code) in [
        (json!({"messages": []}), 400, Value::Null),
        (
            json!({"messages": [{"role": "assistant", "content": "hi"}]}),
            400,
            Value::Null,
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4o"}),
            404,
            json!("model_not_found"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}],
                   "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}}),
            400,
            Value::Null,
        ),
    ] {
        let (got, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(got, status, "{body} -> {resp}");
        assert!(resp["error"]["message"].is_string(), "{resp}");
        assert_eq!(resp["error"]["code"], code, "{resp}");
    }
}

#[test]
fn models_swap_on_request_and_embeddings_come_in_both_encodings() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    let server = kettle_server(data.path(), docs.path());
    let (status, models) = server.get("/v1/models").unwrap();
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let tiny = "smollm2-135m-instruct-q4_1";
    assert!(ids.contains(&tiny), "{models}");
    let (status, one) = server.get(&format!("/v1/models/{tiny}")).unwrap();
    assert_eq!((status, &one["object"]), (200, &json!("model")));

    // A request for another model loads it in place of the default, and back again.
    for model in [tiny, ids[0]] {
        let (status, body) = server.post(
            "/v1/chat/completions",
            &json!({"model": model, "max_tokens": 24,
                    "messages": [{"role": "user", "content": "How often do I water the ferns?"}]}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], model);
        assert!(
            body["usage"]["completion_tokens"].as_u64().unwrap() <= 24,
            "{body}"
        );
    }
    // One model held at a time (the default): the default at start, the tiny one, the
    // default again.
    let (_, m) = server.get("/metrics").unwrap();
    assert!(
        m.as_str()
            .unwrap()
            .contains("\nsovrag_model_loads_total 3\n"),
        "{m}"
    );

    let (status, floats) = server.post(
        "/v1/embeddings",
        &json!({"input": ["descale the kettle", "water the ferns"], "model": "anything"}),
    );
    assert_eq!(status, 200, "{floats}");
    let v: Vec<f64> = floats["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 384);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3);
    assert_eq!(floats["data"][1]["index"], 1);
    let (status, b64) = server.post(
        "/v1/embeddings",
        &json!({"input": "descale the kettle", "encoding_format": "base64"}),
    );
    assert_eq!(status, 200, "{b64}");
    let bytes = decode_base64(b64["data"][0]["embedding"].as_str().unwrap());
    let w: Vec<f64> = bytes
        .chunks(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    assert_eq!(w.len(), 384);
    assert!(v.iter().zip(&w).all(|(a, b)| (a - b).abs() < 1e-6));
    let (status, bad) = server.post("/v1/embeddings", &json!({"input": [1, 2, 3]}));
    assert_eq!(status, 400, "{bad}");
    // Searches still answer while nothing else runs; the server is healthy.
    wait_until(Duration::from_secs(5), "healthz", || {
        server
            .get("/healthz")
            .map(|(s, _)| s == 200)
            .unwrap_or(false)
    });
}

/// Each annotation is a `url_citation` over a citation marker of `content`.
fn assert_marked(content: &str, annotations: &Value) {
    let chars: Vec<char> = content.chars().collect();
    let notes = annotations.as_array().expect("annotations");
    assert!(!notes.is_empty(), "no annotations for {content}");
    for a in notes {
        assert_eq!(a["type"], "url_citation", "{a}");
        let c = &a["url_citation"];
        let (s, e) = (
            c["start_index"].as_u64().unwrap() as usize,
            c["end_index"].as_u64().unwrap() as usize,
        );
        let marker: String = chars[s..e.min(chars.len())].iter().collect();
        assert!(
            marker.starts_with('[') && marker.ends_with(']'),
            "{marker:?} in {content:?}"
        );
    }
}

/// Standard base64 (the test decodes what the server encodes, without a crate of its own).
fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|q| {
            let n = q.iter().fold(0u32, |n, &d| (n << 6) | u32::from(d)) << (6 * (4 - q.len()));
            let bytes = n.to_be_bytes();
            bytes[1..q.len()].to_vec()
        })
        .collect()
}

#[test]
fn temperature_and_seed_are_honoured() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("owls.md"),
        "# Owls\n\nThe barn owl hunts at dusk over open fields. It nests in old barns.\n",
    )
    .unwrap();
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    let server = Server::start(data.path(), &["--gguf", &tiny_gguf()]);
    let ask = |extra: Value| {
        let mut body = json!({
            "messages": [{"role": "user", "content": "Tell me about the barn owl."}],
            "verify": false,
            "max_tokens": 40,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        server.post("/v1/chat/completions", &body)
    };
    let content = |r: &Value| {
        r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The same seed draws the same answer from the same state (llama.cpp, like OpenAI, only
    // promises this best-effort: a prompt read afresh and one read from the KV cache give
    // logits a few ulps apart, which a flat distribution can notice). The first request
    // leaves the cache as the next two find it.
    let _ = ask(json!({"temperature": 1.2, "seed": 7}));
    let (s1, a) = ask(json!({"temperature": 1.2, "seed": 7}));
    let (s2, b) = ask(json!({"temperature": 1.2, "seed": 7}));
    assert_eq!((s1, s2), (200, 200), "{a} {b}");
    assert_eq!(content(&a), content(&b));
    assert_eq!(a["usage"], b["usage"]);
    // Temperature 0 is the greedy answer.
    let (_, greedy) = ask(json!({}));
    let (_, zero) = ask(json!({"temperature": 0, "seed": 3}));
    assert_eq!(content(&greedy), content(&zero));
    for bad in [
        json!({"temperature": 2.5}),
        json!({"temperature": 1, "top_p": 0}),
    ] {
        let (status, err) = ask(bad.clone());
        assert_eq!(status, 400, "{bad}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must be"),
            "{err}"
        );
    }
}

#[test]
fn a_follow_up_is_retrieved_on_the_rewritten_question() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "linux.md",
            "# Installing on Linux\n\nOn Linux, install the reader with `apt install reader` and start it with `reader --daemon`.\n",
        ),
        (
            "windows.md",
            "# Installing on Windows\n\nOn Windows, install the reader from the Microsoft Store and start it from the Start menu.\n",
        ),
        (
            "windows-themes.md",
            "# Windows and themes\n\nThe reader's dark theme follows the Windows colour setting.\n",
        ),
    ] {
        std::fs::write(docs.path().join(name), text).unwrap();
    }
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    let server = Server::start(data.path(), &[]);
    let (status, r) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "How do I install the reader on Linux?"},
            {"role": "assistant", "content": "Run `apt install reader` [1]."},
            {"role": "user", "content": "And on Windows?"},
        ], "k": 1}),
    );
    assert_eq!(status, 200, "{r}");
    // Retrieval ran on a standalone question about installing on Windows, so the one
    // passage is the Windows install page, not the one that only shares "Windows".
    let q = r["sovrag"]["question"].as_str().unwrap().to_lowercase();
    assert!(q.contains("install") && q.contains("windows"), "{q}");
    assert!(!q.contains("linux"), "{q}");
    assert!(
        r["sources"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("windows.md"),
        "{r}"
    );
    let content = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Microsoft Store"), "{r}");
    // The rewrite's tokens are counted with the answer's.
    let (_, m) = server.get("/metrics").unwrap();
    let prompted: u64 = m
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("sovrag_prompt_tokens_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        prompted > r["usage"]["prompt_tokens"].as_u64().unwrap() + 50,
        "{prompted} {r}"
    );
    // A first question is retrieved on as it is.
    let (_, r) = server.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "And on Windows?"}], "k": 1}),
    );
    assert_eq!(r["sovrag"]["question"], "And on Windows?");
}

#[test]
fn two_models_held_loaded_swap_without_reloading() {
    let data = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("ferns.md"),
        "# Watering plants\n\nWater the ferns every Tuesday.\n",
    )
    .unwrap();
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    let server = Server::start(data.path(), &["--max-loaded-models", "2"]);
    let (_, models) = server.get("/v1/models").unwrap();
    let default = models["data"][0]["id"].as_str().unwrap().to_owned();
    let tiny = "smollm2-135m-instruct-q4_1";
    for model in [tiny, default.as_str(), tiny, default.as_str()] {
        let (status, body) = server.post(
            "/v1/chat/completions",
            &json!({"model": model, "max_tokens": 8, "verify": false,
                    "messages": [{"role": "user", "content": "When do I water the ferns?"}]}),
        );
        assert_eq!(
            (status, body["model"].as_str()),
            (200, Some(model)),
            "{body}"
        );
    }
    // The default at start and the tiny one on first use; then both stay.
    let (_, m) = server.get("/metrics").unwrap();
    assert!(
        m.as_str()
            .unwrap()
            .contains("\nsovrag_model_loads_total 2\n"),
        "{m}"
    );
}

//! The usage ledger and its report: real counts from real work, kept across a `kill -9`,
//! priced with the cost table, the same over HTTP as on the command line.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

#[test]
fn the_ledger_counts_work_survives_kill_9_and_is_reported() {
    let data = tempfile::tempdir().unwrap();
    let docs = owl_docs();
    run_ok(sovrag(data.path()).arg("index").arg(docs.path()));
    run_ok(sovrag(data.path()).args(["query", "barn owl"]));
    let r = json_of(&run_ok(sovrag(data.path()).args(["report", "--json"])));
    let t = &r["totals"];
    assert!(t["embedded_tokens"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(t["searches"], 1, "{r}");
    assert_eq!(t["answers"], 0, "{r}");
    assert!(t["cpu_seconds"].as_f64().unwrap() > 0.0, "{r}");

    // An answer from a server killed with -9 a few seconds later is still counted.
    let mut server = Server::start(data.path(), &["--gguf", &tiny_gguf()]);
    let (status, a) = server.post(
        "/v1/ask",
        &json!({"question": "When does the barn owl hunt?", "k": 1}),
    );
    assert_eq!(status, 200, "{a}");
    let prompt = a["prompt_tokens"].as_u64().unwrap();
    let generated = a["generated_tokens"].as_u64().unwrap();
    let (status, over_http) = server.get("/v1/report?days=7").unwrap();
    assert_eq!(status, 200, "{over_http}");
    let (status, bad) = server.get("/v1/report?days=zero").unwrap();
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"]["message"].is_string(), "{bad}");

    // /metrics in Prometheus' text format: the requests per route with their latency, and
    // the process's counters.
    let (status, m) = server.get("/metrics").unwrap();
    assert_eq!(status, 200);
    let m = m.as_str().expect("text").to_owned();
    let value = |line_start: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
    };
    assert_eq!(
        value("sovrag_http_requests_total{route=\"/v1/ask\",method=\"POST\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        value("sovrag_http_request_duration_seconds_count{route=\"/v1/ask\",method=\"POST\"}"),
        1.0
    );
    assert_eq!(
        value(
            "sovrag_http_request_duration_seconds_bucket{route=\"/v1/ask\",method=\"POST\",le=\"+Inf\"}"
        ),
        1.0
    );
    assert_eq!(
        value("sovrag_http_requests_total{route=\"/v1/report\",method=\"GET\",status=\"400\"}"),
        1.0
    );
    assert_eq!(value("sovrag_answers_total "), 1.0);
    assert_eq!(value("sovrag_model_loads_total "), 1.0);
    assert_eq!(value("sovrag_prompt_tokens_total ") as u64, prompt);
    assert_eq!(value("sovrag_documents "), 1.0);
    assert!(value("sovrag_index_bytes ") > 0.0);
    std::thread::sleep(Duration::from_secs(3));
    server.kill9();

    let r = json_of(&run_ok(
        sovrag(data.path()).args(["report", "--json", "--days", "7"]),
    ));
    let t = &r["totals"];
    assert_eq!(t["answers"], 1, "{r}");
    assert_eq!(t["prompt_tokens"].as_u64().unwrap(), prompt, "{r}");
    assert_eq!(t["generated_tokens"].as_u64().unwrap(), generated, "{r}");
    let model = "smollm2-135m-instruct-q4_1";
    assert_eq!(t["generators"][model]["answers"], 1, "{r}");
    assert_eq!(r["days"].as_array().unwrap().len(), 1, "{r}");
    // Priced with the built-in table, naming the entries used.
    assert_eq!(r["costs"]["chat"]["name"], "openai/gpt-4o-mini");
    assert!(
        r["costs"]["chat"]["source"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let avoided = r["cost_avoided_usd"]["total"].as_f64().unwrap();
    assert!(avoided > 0.0, "{r}");
    // The sockets were checked each time usage was written, and nothing left the machine.
    assert_eq!(r["pcs"]["factors"]["privacy"]["value"], 1.0, "{r}");
    // No hardware cost and no frontier figure: unknown, never made up.
    assert_eq!(r["pcs"]["score"], Value::Null, "{r}");
    assert_eq!(r["zmcit"]["past"], Value::Null, "{r}");
    // The server's report has the same shape.
    for key in [
        "window",
        "totals",
        "days",
        "costs",
        "cost_avoided_usd",
        "electricity",
        "sscp",
        "zmcit",
        "pcs",
    ] {
        assert!(over_http.get(key).is_some(), "{key} missing: {over_http}");
    }

    // An edited cost table: hardware and a frontier figure make every factor known.
    let costs = data.path().join("costs.toml");
    let template = run_ok(sovrag(data.path()).args(["report", "--costs-template"]));
    let table = String::from_utf8(template.stdout)
        .unwrap()
        .replace("# cost = 1500.0", "cost = 1500.0")
        .replace("# lifetime_months = 36", "lifetime_months = 36");
    std::fs::write(&costs, table).unwrap();
    let r = json_of(&run_ok(
        sovrag(data.path())
            .arg("--costs")
            .arg(&costs)
            .args(["report", "--json"]),
    ));
    assert_eq!(r["zmcit"]["past"], false, "{r}");
    assert!(r["hardware"]["payback_days"].is_number(), "{r}");
    assert!(r["sscp"]["crossover_tokens_per_day"].is_number(), "{r}");
    let text = run_ok(sovrag(data.path()).arg("--costs").arg(&costs).arg("report"));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("ZMCIT: not yet past"), "{text}");
    // A cost table naming a model it has no price for is refused.
    std::fs::write(&costs, "[compare]\nchat = \"x\"\nembedding = \"y\"\n").unwrap();
    let bad = sovrag(data.path())
        .arg("--costs")
        .arg(&costs)
        .arg("report")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no [[prices]] entry"));
}

#[test]
fn doctor_verifies_the_models_and_finds_an_altered_one() {
    let data = tempfile::tempdir().unwrap();
    let out = run_ok(sovrag(data.path()).args(["doctor", "--json"]));
    let d = json_of(&out);
    let files = d["models"]["files"].as_array().unwrap();
    for f in files.iter().filter(|f| f["required"] == true) {
        assert_eq!(f["state"], "verified", "{f}");
    }
    assert_eq!(d["serve"]["keys_required"], false);
    assert!(d["llama_cpp"]["backend"]["devices"].is_array(), "{d}");
    assert!(
        d["network"]["statement"]
            .as_str()
            .unwrap()
            .contains("no outbound")
    );

    // A cache whose tokenizer was changed by one byte fails, naming the file.
    let cache = tempfile::tempdir().unwrap();
    let real = models_dir();
    for f in [
        "minilm/model.onnx",
        "onnxruntime/libonnxruntime.so",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ] {
        std::fs::create_dir_all(cache.path().join(f).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(real.join(f), cache.path().join(f)).unwrap();
    }
    let mut tok = std::fs::read(real.join("minilm/tokenizer.json")).unwrap();
    tok.push(b'\n');
    std::fs::write(cache.path().join("minilm/tokenizer.json"), tok).unwrap();
    let out = sovrag(data.path())
        .arg("--models")
        .arg(cache.path())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let d = json_of(&out);
    let tok = d["models"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "minilm/tokenizer.json")
        .unwrap()
        .clone();
    assert_eq!(tok["state"], "sha256 mismatch", "{d}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("fetch_models.py"));
}

//! `sovrag doctor`: what this installation runs on, checked. Models present and matching
//! their pinned sha256, the ONNX Runtime and llama.cpp in use (CPU features, GPU offload),
//! the data dir, the bind address and whether keys are required, and the network: the
//! sockets every running sovrag process holds, read from /proc.

use std::io::Read;
use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The sha256 of a file, hex.
fn sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The CPU features the models' kernels pick from, as this CPU reports them.
fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
        ] {
            if on {
                f.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        f.push("neon");
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            f.push("dotprod");
        }
    }
    f
}

/// Every running `sovrag` process but this one, with the sockets it holds.
fn running_sockets() -> Vec<Value> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in procs.filter_map(|e| e.ok()) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        if pid == me || comm.trim() != "sovrag" {
            continue;
        }
        out.push(match crate::egress::check(Some(pid)) {
            Ok(s) => json!({"pid": pid, "passes": s.passes(), "sockets": s}),
            Err(e) => json!({"pid": pid, "passes": null, "error": e.to_string()}),
        });
    }
    out
}

/// Runs the checks: the report as JSON, and whether everything needed is in order.
pub fn check(config: &Config, keys_required: bool) -> Result<(Value, bool)> {
    let dir = config
        .models
        .clone()
        .unwrap_or_else(sovrag_ingest::models::ModelPaths::default_dir);
    let mut ok = true;
    let mut models = Vec::new();
    for (file, pin) in sovrag_ingest::models::pins() {
        let path = dir.join(&file);
        let required = sovrag_ingest::models::REQUIRED.contains(&file.as_str())
            || (config.gguf.is_none() && file == sovrag_ingest::models::DEFAULT_GGUF);
        let state = if !path.is_file() {
            if required {
                ok = false;
                "missing"
            } else {
                "not fetched"
            }
        } else {
            eprint!("doctor: checking {file} ... ");
            let got = sha256(&path);
            eprintln!("done");
            match got {
                Ok(h) if h == pin => "verified",
                Ok(_) => {
                    ok = false;
                    "sha256 mismatch"
                }
                Err(_) => {
                    ok = false;
                    "unreadable"
                }
            }
        };
        models.push(json!({"file": file, "required": required, "state": state, "sha256": pin}));
    }
    let user_gguf = config.gguf.as_ref().map(|g| {
        let h = sha256(g);
        if h.is_err() {
            ok = false;
        }
        json!({"path": g.display().to_string(), "sha256": h.ok(), "pinned": false})
    });
    let ort_version = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| m["packages"]["onnxruntime"].as_str().map(str::to_owned));
    let llama = match sovrag_generate::backend_info() {
        Ok(b) => serde_json::to_value(b)?,
        Err(e) => json!({"error": e.to_string()}),
    };
    let gpu_build = if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "metal") {
        "metal"
    } else {
        "cpu only"
    };
    let data_exists = config.data_dir.is_dir();
    let bind_ok = crate::http::check_bind(&config.bind, keys_required);
    let report = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "models": {
            "dir": dir.display().to_string(),
            "files": models,
            "generator": config.gguf.as_ref().map_or_else(
                || sovrag_ingest::models::DEFAULT_GGUF.to_owned(),
                |g| g.display().to_string()),
            "user_gguf": user_gguf,
        },
        "onnx_runtime": {
            "library": std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| dir.join("onnxruntime").join("libonnxruntime.so").display().to_string()),
            "version": ort_version,
            "execution": "CPU",
        },
        "llama_cpp": {
            "build": gpu_build,
            "gpu_layers": config.gpu_layers,
            "backend": llama,
        },
        "cpu": {"cores": std::thread::available_parallelism().map_or(0, |n| n.get()), "features": cpu_features(), "threads": config.threads},
        "data_dir": {"path": config.data_dir.display().to_string(), "exists": data_exists, "answer_log": config.answer_log},
        "serve": {
            "bind": config.bind,
            "keys_required": keys_required,
            "allowed": bind_ok.is_ok(),
            "refusal": bind_ok.err().map(|e| e.to_string()),
        },
        "network": {
            "statement": "sovrag opens no outbound connections: no model downloads, no telemetry, no API calls",
            "running": running_sockets(),
            "check_yourself": [
                "while `sovrag serve` runs: `ss -tunp | grep sovrag` lists only its listener and the connections made to it",
                "run it with no network at all: `unshare --net --map-root-user sh -c 'ip link set lo up; sovrag serve --watch DIR'` works as before",
                "`sovrag report` shows the no-egress check each sovrag process runs on its own sockets whenever it records usage",
            ],
        },
    });
    Ok((report, ok))
}

/// The report for a person.
pub fn render(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut out = format!("sovrag {}\n", s(&r["version"]));
    out += &format!("models in {}:\n", s(&r["models"]["dir"]));
    for f in r["models"]["files"].as_array().into_iter().flatten() {
        out += &format!(
            "  {:<16} {}{}\n",
            s(&f["state"]),
            s(&f["file"]),
            if f["required"] == true {
                " (needed)"
            } else {
                ""
            }
        );
    }
    if let Some(u) = r["models"]["user_gguf"].as_object() {
        out += &format!(
            "  generator {} (yours, not pinned): sha256 {}\n",
            u["path"].as_str().unwrap_or(""),
            u["sha256"].as_str().unwrap_or("unreadable")
        );
    }
    let o = &r["onnx_runtime"];
    out += &format!(
        "ONNX Runtime {} ({}), {}\n",
        o["version"].as_str().unwrap_or("version unknown"),
        s(&o["library"]),
        s(&o["execution"])
    );
    let l = &r["llama_cpp"];
    out += &format!(
        "llama.cpp: {} build, GPU offload {} ({} layers asked), devices: {}{}\n",
        s(&l["build"]),
        if l["backend"]["gpu_offload"] == true {
            "available"
        } else {
            "off"
        },
        l["gpu_layers"],
        l["backend"]["devices"]
            .as_array()
            .map(|d| d.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        l["backend"]["error"]
            .as_str()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    let c = &r["cpu"];
    out += &format!(
        "CPU: {} cores; {}\n",
        c["cores"],
        c["features"]
            .as_array()
            .map(|d| d.iter().map(s).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    let d = &r["data_dir"];
    out += &format!(
        "data dir: {}{}; answer log {}\n",
        s(&d["path"]),
        if d["exists"] == true {
            ""
        } else {
            " (not created yet)"
        },
        if d["answer_log"] == true { "on" } else { "off" }
    );
    let v = &r["serve"];
    out += &format!(
        "serve: {} {}, keys {}\n",
        s(&v["bind"]),
        if v["allowed"] == true {
            "allowed".to_owned()
        } else {
            format!("refused: {}", s(&v["refusal"]))
        },
        if v["keys_required"] == true {
            "required"
        } else {
            "not required"
        }
    );
    let n = &r["network"];
    out += &format!("network: {}\n", s(&n["statement"]));
    if n["running"].as_array().is_none_or(|r| r.is_empty()) {
        out += "  no other sovrag process is running (start `sovrag serve` and run doctor again to see its sockets)\n";
    }
    for p in n["running"].as_array().into_iter().flatten() {
        out += &match p["passes"].as_bool() {
            Some(true) => format!(
                "  running sovrag pid {}: listening on {}, {} accepted connections, nothing outbound\n",
                p["pid"],
                p["sockets"]["listening"]
                    .as_array()
                    .map(|d| d.iter().map(s).collect::<Vec<_>>().join(", "))
                    .filter(|x| !x.is_empty())
                    .unwrap_or_else(|| "nothing".into()),
                p["sockets"]["accepted"]
            ),
            Some(false) => format!(
                "  running sovrag pid {}: SOCKETS THAT COULD LEAVE THE MACHINE: {}\n",
                p["pid"], p["sockets"]["violations"]
            ),
            None => format!(
                "  running sovrag pid {}: cannot read its sockets ({})\n",
                p["pid"],
                s(&p["error"])
            ),
        };
    }
    out += "  check it yourself:\n";
    for h in n["check_yourself"].as_array().into_iter().flatten() {
        out += &format!("  - {}\n", s(h));
    }
    out
}

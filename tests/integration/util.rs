//! Helpers: find the binary, run it, start a server, talk HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `sovrag` binary built beside this test binary (`target/<profile>/sovrag`).
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SOVRAG_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let b = dir.join("sovrag");
    assert!(
        b.is_file(),
        "{} not found: build it first with `cargo build --release` (scripts/test.sh does)",
        b.display()
    );
    b
}

/// The repository root (for `corpus/`).
///
/// Read from cargo's run-time `CARGO_MANIFEST_DIR` first: a target directory shared by clones
/// at different paths (`.ci/run` reuses one) can keep a test binary compiled in another clone,
/// whose compile-time path may no longer exist.
pub fn repo() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().unwrap().to_path_buf()
}

/// A `sovrag` command with its data dir set; quiet logs unless the test run sets RUST_LOG.
pub fn sovrag(data_dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("--data-dir").arg(data_dir);
    // A user's own ~/.config/sovrag/config.toml must not change what the tests see.
    c.env("XDG_CONFIG_HOME", data_dir.join("no-config"))
        .env_remove("SOVRAG_CONFIG")
        .env(THREADS.0, THREADS.1);
    c
}

/// One compute thread per sovrag process. cargo runs as many tests at once as there are
/// cores, and each starts its own sovrag: with every process taking every core, llama.cpp's
/// threads spin at their barriers against each other's, and decoding slows twentyfold or
/// more (a 135M model's 200 tokens: 2.5 s alone, 54 s beside two busy loops on two cores;
/// CI once timed a request out at 300 s that way). One thread each keeps the total at the
/// core count.
pub const THREADS: (&str, &str) = ("SOVRAG_THREADS", "1");

/// Runs to completion; panics with stderr on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn sovrag");
    assert!(
        out.status.success(),
        "{:?} failed ({}):\nstdout: {}\nstderr: {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A running `sovrag serve`, killed on drop.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Starts `sovrag serve` on an ephemeral loopback port with `args`, and waits for /healthz.
    pub fn start(data_dir: &Path, args: &[&str]) -> Server {
        Self::start_with(sovrag(data_dir), args)
    }

    /// [`Server::start`] from a prepared command (its data dir and environment set).
    pub fn start_with(mut command: Command, args: &[&str]) -> Server {
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sovrag serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("serve exited before printing its address")
                .unwrap();
            if let Some(rest) = line.split("http://").nth(1) {
                break format!("http://{}", rest.split('/').next().unwrap());
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let server = Server { child, base };
        wait_until(Duration::from_secs(60), "healthz", || {
            server
                .get("/healthz")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        });
        server
    }

    /// A request with no body: the status and the response headers (names lowercase).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, std::collections::HashMap<String, String>) {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = agent().run(req.body(()).unwrap()).expect("HTTP request");
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        (resp.status().as_u16(), headers)
    }

    /// Kills the server with SIGKILL (no chance to flush or clean up) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let resp = agent()
            .get(format!("{}{path}", self.base))
            .call()
            .map_err(|e| e.to_string())?;
        read(resp)
    }

    /// POSTs a raw body with a content type and optional bearer key.
    pub fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut req = agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", content_type);
        if let Some(k) = key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        read(req.send(body).expect("HTTP request")).expect("response")
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, "application/json", body.to_string().as_bytes(), None)
    }

    /// POSTs `body` and reads the response as server-sent events, to the end.
    pub fn post_events(&self, path: &str, body: &Value) -> Events {
        let mut resp = agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .expect("HTTP request");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mut events = Events {
            status: resp.status().as_u16(),
            content_type: header("content-type"),
            accel_buffering: header("x-accel-buffering"),
            data: Vec::new(),
            comments: 0,
            closed_after_done: None,
        };
        let reader = BufReader::new(resp.body_mut().as_reader());
        let mut done_at = None;
        for line in reader.lines() {
            let line = line.expect("event stream");
            if let Some(data) = line.strip_prefix("data: ") {
                events.data.push(data.to_owned());
                if data == "[DONE]" {
                    done_at = Some(Instant::now());
                }
            } else if line.starts_with(':') {
                events.comments += 1;
            }
        }
        events.closed_after_done = done_at.map(|t| t.elapsed());
        events
    }
}

/// A response read as server-sent events.
#[derive(Debug)]
pub struct Events {
    pub status: u16,
    pub content_type: String,
    pub accel_buffering: String,
    /// Each event's `data`, in order (`[DONE]` included).
    pub data: Vec<String>,
    /// Comment lines (keep-alives).
    pub comments: usize,
    /// How long the server kept the stream open after `[DONE]`.
    pub closed_after_done: Option<Duration>,
}

impl Events {
    /// The JSON events (all but `[DONE]`).
    pub fn json(&self) -> Vec<Value> {
        self.data
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
            .collect()
    }

    /// The content deltas joined.
    pub fn content(&self) -> String {
        self.json()
            .iter()
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> Result<(u16, Value), String> {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, v))
}

/// Polls `cond` until it holds, panicking after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Lines `start..=end` (1-based) of a file, joined with newlines.
pub fn lines_of(path: &str, start: u64, end: u64) -> String {
    let text = std::fs::read_to_string(path).expect("cited file readable");
    text.lines()
        .skip(start as usize - 1)
        .take((end - start + 1) as usize)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The model cache the suite runs with (`SOVRAG_MODELS`, else the default cache).
pub fn models_dir() -> PathBuf {
    std::env::var_os("SOVRAG_MODELS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sovrag/models"),
        PathBuf::from,
    )
}

/// The tiny generator (SmolLM2-135M-Instruct) in the model cache, for tests of plumbing
/// rather than of answers.
pub fn tiny_gguf() -> String {
    models_dir()
        .join("smollm2-135m-instruct-q4_1.gguf")
        .display()
        .to_string()
}

/// A folder with one page about owls.
pub fn owl_docs() -> tempfile::TempDir {
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("owls.md"),
        "# Owls\n\nThe barn owl hunts at dusk over open fields.\n",
    )
    .unwrap();
    docs
}

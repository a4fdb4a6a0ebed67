//! Nothing leaves the machine: the whole pipeline runs in a network namespace that has no
//! interface but loopback, and a running server holds no socket but its own listener and
//! the connections made to it.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::util::*;

/// `unshare` arguments that make a network namespace here: as root, or as a user through a
/// user namespace. Panics, saying why, where neither works: this test must not pass silently
/// on a machine that cannot run it (CI runs as root).
fn unshare_args() -> Vec<&'static str> {
    for args in [vec!["--net"], vec!["--user", "--net", "--map-root-user"]] {
        let ok = Command::new("unshare")
            .args(&args)
            .args(["ip", "link", "set", "lo", "up"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return args;
        }
    }
    panic!(
        "cannot make a network namespace with loopback up (`unshare --net ip link set lo up`, \
         or `unshare --user --net --map-root-user ...`): run this test as root, or where user \
         namespaces are allowed; it needs util-linux's unshare and iproute2's ip"
    );
}

/// Polls `base` (inside the namespace), asks over HTTP, changes a watched file and waits
/// until search finds the new text; prints one JSON line of what it saw.
const CLIENT: &str = r##"
import json, sys, time, urllib.request
base, docs = sys.argv[1], sys.argv[2]
def call(path, body=None):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.load(r)
for _ in range(600):
    try:
        if call("/v1/status")["documents"] >= 2 and not call("/v1/status")["indexing"]:
            break
    except OSError:
        pass
    time.sleep(0.2)
ask = call("/v1/ask", {"question": "When does the barn owl hunt?", "k": 2})
open(docs + "/heron.md", "w").write("# Herons\n\nThe grey heron nests in tall alder trees.\n")
found = False
for _ in range(300):
    hits = call("/v1/query", {"query": "grey heron nests alder", "k": 1})["hits"]
    if hits and hits[0]["path"].endswith("heron.md"):
        found = True
        break
    time.sleep(0.2)
print(json.dumps({"ask": ask, "watch_found": found}))
"##;

#[test]
fn the_whole_pipeline_runs_with_no_network() {
    let unshare = unshare_args();
    let data = tempfile::tempdir().unwrap();
    let docs = owl_docs();
    std::fs::write(
        docs.path().join("kettle.html"),
        "<html><body><h1>Kettle</h1><p>Descale the kettle with white vinegar.</p></body></html>",
    )
    .unwrap();
    let (bin, d, dd) = (bin(), data.path(), docs.path());
    let beir = repo().join("tests/fixtures/beir-mini");
    // Every step in one namespace: index, query, ask, eval, then serve --watch answering
    // over HTTP on loopback.
    let script = format!(
        r#"set -eu
ip link set lo up
# No interface but loopback.
test "$(ip -o link show | grep -vc ': lo:')" = 0
S="{bin}"; D="{d}"
"$S" --data-dir "$D" index "{dd}" >&2
"$S" --data-dir "$D" query "barn owl" --json > "$D/query.json"
"$S" --data-dir "$D" ask "When does the barn owl hunt?" --k 2 --json > "$D/ask.json"
"$S" --data-dir "$D/eval" eval --json --k 10 --beir "{beir}" > "$D/eval.json"
"$S" --data-dir "$D" serve --bind 127.0.0.1:7878 --watch "{dd}" >&2 &
pid=$!
python3 -c "$CLIENT" http://127.0.0.1:7878 "{dd}" > "$D/http.json"
kill $pid
"#,
        bin = bin.display(),
        d = d.display(),
        dd = dd.display(),
        beir = beir.display(),
    );
    let out = Command::new("unshare")
        .args(&unshare)
        .args(["sh", "-c", &script])
        .env("CLIENT", CLIENT)
        .env(THREADS.0, THREADS.1)
        .env("XDG_CONFIG_HOME", d.join("no-config"))
        .env_remove("SOVRAG_CONFIG")
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "offline pipeline failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(d.join(name)).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
    };
    let q = read("query.json");
    assert!(
        q["hits"][0]["path"].as_str().unwrap().ends_with("owls.md"),
        "{q}"
    );
    let ask = read("ask.json");
    assert_eq!(ask["abstained"], false, "{ask}");
    assert!(ask["answer"].as_str().unwrap().contains("dusk"), "{ask}");
    let eval = read("eval.json");
    assert!(
        eval["hybrid"]["ndcg@10"].as_f64().is_some_and(|x| x > 0.5),
        "{eval}"
    );
    let http = read("http.json");
    assert_eq!(http["ask"]["abstained"], false, "{http}");
    assert_eq!(http["watch_found"], true, "{http}");
}

/// The inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// `(table, local, remote, state)` of each of `inodes` in `/proc/PID/net/{tcp,tcp6,udp,udp6}`.
fn sockets(pid: u32, inodes: &HashSet<u64>) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[9].parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                out.push((table.into(), f[1].into(), f[2].into(), f[3].into()));
            }
        }
    }
    out
}

/// Whether a `/proc/net` address (`0100007F:1EC6`, or 32 hex digits for IPv6) is loopback.
fn is_loopback(addr: &str) -> bool {
    let ip = addr.split(':').next().unwrap_or_default();
    match ip.len() {
        8 => ip.ends_with("7F"), // 127.x.x.x, stored little-endian
        32 => ip == "00000000000000000000000001000000" || ip.ends_with("0100007F"),
        _ => false,
    }
}

#[test]
fn a_server_holds_no_socket_but_its_listener_and_its_clients() {
    let data = tempfile::tempdir().unwrap();
    let docs = owl_docs();
    let server = Server::start(data.path(), &["--watch", docs.path().to_str().unwrap()]);
    let pid = server.pid();
    let mut seen = Vec::new();
    let look = |seen: &mut Vec<(String, String, String, String)>| {
        seen.extend(sockets(pid, &socket_inodes(pid)));
    };
    // A full cycle: indexing, an answer, a watched change, each looked at.
    wait_until(Duration::from_secs(120), "indexing", || {
        let (_, s) = server.get("/v1/status").unwrap();
        s["documents"] == 1 && s["indexing"] == false
    });
    look(&mut seen);
    let (status, a) = server.post(
        "/v1/ask",
        &json!({"question": "When does the barn owl hunt?", "k": 1}),
    );
    assert_eq!(status, 200, "{a}");
    look(&mut seen);
    std::fs::write(
        docs.path().join("heron.md"),
        "# Herons\n\nThe heron waits.\n",
    )
    .unwrap();
    wait_until(Duration::from_secs(30), "the change indexed", || {
        let (_, s) = server.get("/v1/status").unwrap();
        s["documents"] == 2
    });
    look(&mut seen);
    assert!(
        !seen.is_empty(),
        "no socket seen at all: the check is broken"
    );
    for (table, local, remote, state) in &seen {
        assert!(
            table.starts_with("tcp"),
            "a {table} socket ({local} → {remote}): sovrag sends no datagrams (DNS, telemetry)"
        );
        assert!(is_loopback(local), "{table} socket on {local}");
        // 0A = LISTEN (remote all zeros); anything else is a client's connection to us.
        assert!(
            state == "0A" || is_loopback(remote),
            "{table} connection to {remote} (state {state})"
        );
    }
    assert!(Path::new(&format!("/proc/{pid}")).exists());
}

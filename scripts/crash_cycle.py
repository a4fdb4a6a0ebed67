#!/usr/bin/env python3
"""Crash safety of the folder-sync daemon: churn a watched folder, kill -9 the daemon at
random moments, restart it, and check that the index converges to the files on disk.

    python3 scripts/crash_cycle.py [--cycles 50] [--bin target/release/sovrag] [--seed 1]

While a churn thread keeps changing the folder (new files, appends, editor-style atomic
saves, rapid repeated saves, renames, moves between folders and in and out of the tree,
folder renames, deletes, emptied and binary files), the daemon (`sovrag serve --watch`) is
started and killed with SIGKILL after a random 0.3-4 s, CYCLES times: kills land in model
loading, the start-up reconcile, syncs and idle time alike. Then the churn stops, the daemon
is started once more and left to settle, and two checks run:

- search: every file's newest marker word is found by /v1/query at the file's current path;
- `sovrag verify`: every indexable file is indexed with its current text (hash, chunk text,
  line spans), nothing else is, no chunk is stored twice, LanceDB and tantivy agree.

With `--store s3://bucket/prefix` the index lives on object storage (the endpoint and
credentials from SOVRAG_S3_ENDPOINT, SOVRAG_S3_ALLOW_HTTP and AWS_*): the daemon is its
writer, and a replica (`serve --replica`) runs throughout. Every kill must leave the replica
answering, and at the end the replica must find every marker too.

Prints `cycles run: N` and `violations: M` (target 0) and exits 1 if M > 0.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Churn(threading.Thread):
    """Random changes of every kind the daemon must follow; each text file carries a marker
    word `m<id>v<version>` that names its latest content."""

    def __init__(self, docs, outside, rng):
        super().__init__(daemon=True)
        self.docs, self.outside, self.rng = docs, outside, rng
        self.stop = threading.Event()
        self.next_id = 0
        self.ops = 0

    def body(self, version_tag):
        words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(5, 60)))
        return f"# Note {version_tag}\n\nMarker {version_tag} says {words}.\n"

    def files(self, root=None):
        out = []
        for d, dirs, names in os.walk(root or self.docs):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            out += [os.path.join(d, n) for n in names if not n.startswith(".")]
        return out

    def dirs(self):
        out = [self.docs]
        for d, dirs, _ in os.walk(self.docs):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            out += [os.path.join(d, x) for x in dirs]
        return out

    def new_file(self, folder=None):
        self.next_id += 1
        tag = f"m{self.next_id}v0"
        path = os.path.join(folder or self.rng.choice(self.dirs()), f"f{self.next_id}.md")
        with open(path, "w") as f:
            f.write(self.body(tag))

    def bump(self, path):
        """A new marker for the file's id: the version after the newest one it holds."""
        name = os.path.basename(path).split(".")[0][1:]
        self.next_id += 1
        return f"m{name}v{self.next_id}"

    def step(self):
        r = self.rng
        files = self.files()
        op = r.choice(
            ["new", "new", "append", "atomic", "rapid", "rename", "move", "delete",
             "dir_new", "dir_rename", "out", "in", "empty", "binary"]
        )
        if op == "new" or not files:
            self.new_file()
            return
        f = r.choice(files)
        try:
            if op == "append":
                with open(f, "a") as h:
                    h.write(self.body(self.bump(f)))
            elif op == "atomic":  # an editor's save: write a hidden temp file, rename over
                tmp = os.path.join(os.path.dirname(f), "." + os.path.basename(f) + ".swp")
                with open(tmp, "w") as h:
                    h.write(self.body(self.bump(f)))
                os.replace(tmp, f)
            elif op == "rapid":  # repeated saves faster than the debounce: last one wins
                for _ in range(5):
                    with open(f, "w") as h:
                        h.write(self.body(self.bump(f)))
            elif op == "rename":
                base = os.path.basename(f)
                os.replace(f, os.path.join(os.path.dirname(f), "r" + base))
            elif op == "move":
                os.replace(f, os.path.join(r.choice(self.dirs()), os.path.basename(f)))
            elif op == "delete":
                os.remove(f)
            elif op == "dir_new":
                self.next_id += 1
                d = os.path.join(r.choice(self.dirs()), f"d{self.next_id}")
                os.mkdir(d)
                for _ in range(r.randint(1, 4)):
                    self.new_file(d)
            elif op == "dir_rename":
                ds = self.dirs()[1:]
                if ds:
                    d = r.choice(ds)
                    self.next_id += 1
                    os.rename(d, os.path.join(os.path.dirname(d), f"d{self.next_id}"))
            elif op == "out":  # moved out of the watched tree
                os.replace(f, os.path.join(self.outside, os.path.basename(f)))
            elif op == "in":  # moved into it from outside
                away = self.files(self.outside)
                if away:
                    g = r.choice(away)
                    os.replace(g, os.path.join(r.choice(self.dirs()), os.path.basename(g)))
            elif op == "empty":
                open(f, "w").close()
            elif op == "binary":
                with open(f, "wb") as h:
                    h.write(b"\x00\x01binary" * 50)
        except (FileNotFoundError, OSError):
            pass  # raced with another change of ours: fine, the next step goes on

    def run(self):
        while not self.stop.is_set():
            self.step()
            self.ops += 1
            time.sleep(self.rng.uniform(0.01, 0.12))


WORDS = (
    "heron estuary lantern quarry meadow copper glacier orchard saffron tundra basalt "
    "lichen harbor falcon marrow cedar pepper walnut canyon ember thistle"
).split()


def sovrag_env(data, store):
    """The environment of a sovrag process whose own state is in `data`."""
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(data, "no-config"))
    env.setdefault("RUST_LOG", "warn")
    if store:
        env["SOVRAG_CACHE_DIR"] = data
    return env


class Daemon:
    """The writer (`serve --watch`), or with replica=True a `serve --replica`."""

    def __init__(self, args, data, docs, port, log, replica=False):
        self.args, self.data, self.docs, self.port, self.log = args, data, docs, port, log
        self.replica = replica
        self.proc = None

    def start(self):
        role = ["--replica", "--follow-secs", "0.5"] if self.replica else ["--watch", self.docs]
        self.proc = subprocess.Popen(
            [self.args.bin, "--data-dir", self.args.store or self.data,
             "--bind", f"127.0.0.1:{self.port}", "serve", *role],
            stdout=self.log, stderr=self.log, env=sovrag_env(self.data, self.args.store),
        )

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def get(self, path, body=None):
        url = f"http://127.0.0.1:{self.port}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)


def marker_of(path):
    """The newest marker in a file (the one with the highest version), or None."""
    try:
        raw = open(path, "rb").read()
        if b"\0" in raw[:8000]:
            return None  # binary, as sovrag judges it: not indexed
        text = raw.decode("utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    marks = [w for w in text.replace(".", " ").split() if w.startswith("m") and "v" in w[1:]]
    marks = [m for m in marks if m[1:].replace("v", "", 1).isdigit()]
    return max(marks, key=lambda m: int(m.split("v")[1])) if marks else None


def start_replica(args, work, log, writer):
    """A replica, once the writer has made the table (a replica never creates one)."""
    replica = Daemon(args, os.path.join(work, "replica"), None, free_port(), log, replica=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        replica.start()
        while replica.proc.poll() is None and time.time() < deadline:
            try:
                replica.get("/healthz")
                return replica
            except OSError:
                time.sleep(0.2)
        time.sleep(0.5)  # it exited: no table yet
    sys.exit("the replica did not start within 120 s")


def replica_agrees(writer, replica, churn):
    """The replica, caught up with the writer's version, finds every marker the writer does."""
    deadline = time.time() + 120
    version = writer.get("/v1/status")["store"]["version"]
    while time.time() < deadline:
        try:
            if replica.get("/v1/status")["store"]["version"] >= version:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        return [f"the replica did not reach version {version} within 120 s"]
    missing = []
    for f in churn.files():
        mark = marker_of(f)
        if mark is None:
            continue
        hits = replica.get("/v1/query", {"query": mark, "k": 10})["hits"]
        if not any(h["path"] == f and mark in h["text"] for h in hits):
            missing.append(f"replica: {mark} not found at {f}")
    return missing


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "sovrag"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--files", type=int, default=40, help="files in the folder at the start")
    p.add_argument("--keep", action="store_true", help="keep the temporary folders")
    p.add_argument("--store", help="s3://bucket/prefix: the index on object storage, with a replica")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = os.path.realpath(tempfile.mkdtemp(prefix="sovrag-crash-"))
    data, docs, outside = (os.path.join(work, d) for d in ("data", "docs", "outside"))
    for d in (docs, outside, os.path.join(docs, "a"), os.path.join(docs, "b")):
        os.makedirs(d, exist_ok=True)
    churn = Churn(docs, outside, rng)
    for _ in range(args.files):
        churn.new_file()
    log = open(os.path.join(work, "daemon.log"), "ab")
    daemon = Daemon(args, data, docs, free_port(), log)
    replica = None
    violations = []
    started = time.time()
    churn.start()
    for i in range(args.cycles):
        daemon.start()
        if args.store and replica is None:
            replica = start_replica(args, work, log, daemon)
        time.sleep(rng.uniform(0.3, 4.0))
        daemon.kill()
        if replica is not None:
            try:
                replica.get("/v1/query", {"query": "marker", "k": 3})
            except OSError as e:
                violations.append(f"cycle {i}: the replica stopped answering: {e}")
    churn.stop.set()
    churn.join()
    cycles_done = args.cycles

    # Let the last start converge: its start-up reconcile sees every change made while the
    # daemon was dead, and then it goes idle.
    daemon.start()
    deadline = time.time() + 600
    settled = 0
    while time.time() < deadline and settled < 3:
        time.sleep(1)
        try:
            s = daemon.get("/v1/status")
        except OSError:
            continue
        idle = not s["indexing"] and s["queue"] == 0
        settled = settled + 1 if idle else 0
    if settled < 3:
        violations.append("the daemon did not settle within 600 s")
    checked = 0
    for f in churn.files():
        mark = marker_of(f)
        if mark is None:
            continue  # emptied or binary: verify checks it has no chunks
        checked += 1
        hits = daemon.get("/v1/query", {"query": mark, "k": 10})["hits"]
        if not any(h["path"] == f and mark in h["text"] for h in hits):
            violations.append(f"search: {mark} not found at {f}")
    if replica is not None:
        violations += replica_agrees(daemon, replica, churn)
        replica.stop()
    daemon.stop()
    log.close()

    out = subprocess.run(
        [args.bin, "--data-dir", args.store or data, "verify", docs, "--json"],
        capture_output=True, text=True, env=sovrag_env(data, args.store),
    )
    try:
        v = json.loads(out.stdout)
        violations += [f"verify: {x}" for x in v["violations"]]
        files, chunks = v["files"], v["chunks"]
    except (json.JSONDecodeError, KeyError):
        violations.append(f"verify failed: {out.stderr.strip()}")
        files = chunks = 0

    for x in violations[:50]:
        print(x)
    print(f"churn: {churn.ops} changes over {time.time() - started:.0f} s; "
          f"final tree: {files} files, {chunks} chunks; {checked} markers searched")
    print(f"cycles run: {cycles_done}")
    print(f"violations: {len(violations)}")
    if args.keep or violations:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()

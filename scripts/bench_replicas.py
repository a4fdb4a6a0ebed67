#!/usr/bin/env python3
"""Replica freshness: how long after a file is saved in the writer's watched folder a
replica answers with it, over an index on object storage (moto on loopback).

    python3 scripts/bench_replicas.py [--changes 100] [--follow-secs 2] [--bin PATH]

Starts moto_server (from the clients' venv, scripts/clients_venv.sh), a writer (`serve
--watch`) and a replica (`serve --replica`) on one prefix, then makes CHANGES changes one at
a time, each after a random pause of up to --follow-secs (so that changes land anywhere in
the replica's polling period, not just after it looked): a new file, an edit of one, a delete
of one, in turn. For each it polls both nodes'
/v1/query every 50 ms until the change shows (the new word found at its path, or the deleted
file's word gone) and prints p50/p99/max seconds per node. The replica's time includes the
writer's (it can only see a change once the writer has committed it).
"""

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def wait_for(what, cond, limit=120):
    t = time.time()
    while time.time() - t < limit:
        try:
            if cond():
                return time.time() - t
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def shows(base, word, path, present):
    hits = call(f"{base}/v1/query", {"query": word, "k": 10})["hits"]
    there = any(h["path"] == path and word in h["text"] for h in hits)
    return there == present


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--follow-secs", default="2")
    p.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "sovrag"))
    p.add_argument("--venv", default=os.environ.get(
        "SOVRAG_CLIENTS_VENV", os.path.expanduser("~/.cache/sovrag-ci/clients-venv")))
    args = p.parse_args()
    work = os.path.realpath(tempfile.mkdtemp(prefix="sovrag-replicas-"))
    docs = os.path.join(work, "docs")
    os.makedirs(docs)
    log = open(os.path.join(work, "nodes.log"), "ab")
    procs = []
    try:
        moto_port = free_port()
        procs.append(subprocess.Popen(
            [os.path.join(args.venv, "bin", "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=log, stderr=log))
        endpoint = f"http://127.0.0.1:{moto_port}"
        wait_for("moto", lambda: call(f"{endpoint}/bench", method="PUT") or True)
        env = dict(os.environ, SOVRAG_S3_ENDPOINT=endpoint, SOVRAG_S3_ALLOW_HTTP="true",
                   AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                   AWS_REGION="us-east-1", RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        store = "s3://bench/kb"
        for i in range(10):
            with open(os.path.join(docs, f"seed{i}.md"), "w") as f:
                f.write(f"# Seed {i}\n\nA page about topic seedword{i} and its details.\n")

        def node(name, *role):
            port = free_port()
            procs.append(subprocess.Popen(
                [args.bin, "--data-dir", store, "--cache-dir", os.path.join(work, name),
                 "--bind", f"127.0.0.1:{port}", "serve", *role],
                stdout=log, stderr=log,
                env=dict(env, XDG_CONFIG_HOME=os.path.join(work, name, "no-config"))))
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{name} up", lambda: call(f"{base}/healthz") or True)
            return base

        writer = node("writer", "--watch", docs)
        wait_for("the seed files", lambda: call(f"{writer}/v1/status")["documents"] == 10)
        replica = node("replica", "--replica", "--follow-secs", args.follow_secs)
        wait_for("the replica", lambda: call(f"{replica}/v1/status")["documents"] == 10)

        times = {"writer": [], "replica": []}
        live = []
        rng = random.Random(1)
        for i in range(args.changes):
            time.sleep(rng.uniform(0, float(args.follow_secs)))
            kind = ("create", "edit", "delete")[i % 3]
            if kind == "delete" and live:
                path, word = live.pop(0)
                os.remove(path)
                present = False
            else:
                word = f"change{i}word"
                if kind == "edit" and live:
                    path, _ = live.pop(0)
                else:
                    path = os.path.join(docs, f"new{i}.md")
                with open(path + ".tmp", "w") as f:
                    f.write(f"# Note {i}\n\nThis note mentions {word} once.\n")
                os.replace(path + ".tmp", path)
                live.append((path, word))
                present = True
            t0 = time.time()
            wait_for(f"change {i} on the writer", lambda: shows(writer, word, path, present))
            times["writer"].append(time.time() - t0)
            wait_for(f"change {i} on the replica", lambda: shows(replica, word, path, present))
            times["replica"].append(time.time() - t0)
        st = call(f"{replica}/v1/status")["store"]
        print(f"{args.changes} changes (create, edit, delete in turn), follow-secs {args.follow_secs}:")
        for name, xs in times.items():
            print(f"  {name:8} p50 {pct(xs, 50):.2f} s  p99 {pct(xs, 99):.2f} s  "
                  f"max {max(xs):.2f} s  mean {statistics.mean(xs):.2f} s")
        print(f"  replica: version {st['version']}, {st['documents_applied']} documents and "
              f"{st['rows_applied']} chunks applied, {st['rebuilds']} rebuilds")
    finally:
        for pr in reversed(procs):
            pr.terminate()
        for pr in procs:
            try:
                pr.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pr.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

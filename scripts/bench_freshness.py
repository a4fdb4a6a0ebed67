#!/usr/bin/env python3
"""Freshness of `sovrag serve --watch`: how long from a file change on disk until search shows it.

Starts sovrag on a temporary folder and data dir (loopback, ephemeral port), makes N changes
(new files, appends, renames, deletes, in rotation), and after each polls POST /v1/query until
the change is visible. Prints p50/p99 save→searchable in milliseconds, and the failures.
Usage: bench_freshness.py [--n 200] [--sovrag target/release/sovrag] [--timeout 10]"""
import argparse, json, os, random, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=200)
ap.add_argument('--sovrag', default=os.path.join(os.environ.get('CARGO_TARGET_DIR', 'target'), 'release', 'sovrag'))
ap.add_argument('--timeout', type=float, default=10.0)
a = ap.parse_args()

root = tempfile.mkdtemp(prefix='sovrag-fresh-'); data = tempfile.mkdtemp(prefix='sovrag-fresh-data-')
docs = os.path.join(root, 'docs'); os.makedirs(docs)
proc = subprocess.Popen([a.sovrag, '--data-dir', data, 'serve', '--bind', '127.0.0.1:0', '--watch', docs],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
base = None
for line in proc.stdout:
    if 'http://' in line:
        base = 'http://' + line.split('http://')[1].split('/')[0]; break
if not base:
    sys.exit('server did not start')

def query(q):
    req = urllib.request.Request(base + '/v1/query', json.dumps({'query': q, 'k': 10}).encode(), {'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)['hits']

def wait(pred):
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False

for _ in range(200):
    try:
        urllib.request.urlopen(base + '/healthz', timeout=1); break
    except Exception:
        time.sleep(0.1)

rng = random.Random(7)
files = {}  # name -> unique word it contains
lat, fails, kinds = [], [], {}
def word():
    return 'zq' + ''.join(rng.choice('bcdfghjklmnpqrstvwxz') for _ in range(8))
try:
    for i in range(a.n):
        kind = ['create', 'append', 'rename', 'delete'][i % 4] if files else 'create'
        if kind == 'create' or not files:
            kind = 'create'; name = f'note{i}.md'; w = word()
            t0 = time.monotonic()
            with open(os.path.join(docs, name), 'w') as f:
                f.write(f'# Note {i}\n\nThis note mentions {w} once.\n')
            files[name] = w
            ok = wait(lambda: any(h['path'].endswith('/' + name) and w in h['text'] for h in query(w)))
        elif kind == 'append':
            name = rng.choice(sorted(files)); w = word()
            t0 = time.monotonic()
            with open(os.path.join(docs, name), 'a') as f:
                f.write(f'\nAppended {w} here.\n')
            ok = wait(lambda: any(h['path'].endswith('/' + name) and w in h['text'] for h in query(w)))
        elif kind == 'rename':
            old = rng.choice(sorted(files)); new = f'renamed{i}.md'; w = files.pop(old); files[new] = w
            t0 = time.monotonic()
            os.rename(os.path.join(docs, old), os.path.join(docs, new))
            ok = wait(lambda: (lambda hs: any(h['path'].endswith('/' + new) for h in hs)
                               and not any(h['path'].endswith('/' + old) for h in hs))(query(w)))
        else:
            name = rng.choice(sorted(files)); w = files.pop(name)
            t0 = time.monotonic()
            os.remove(os.path.join(docs, name))
            ok = wait(lambda: not any(h['path'].endswith('/' + name) for h in query(w)))
        ms = (time.monotonic() - t0) * 1000
        kinds.setdefault(kind, []).append(ms)
        (lat if ok else fails).append(ms)
finally:
    proc.kill(); proc.wait()
    shutil.rmtree(root, ignore_errors=True); shutil.rmtree(data, ignore_errors=True)

def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, round((len(v) - 1) * q))] if v else float('nan')
print(json.dumps({'changes': a.n, 'visible': len(lat), 'not_visible_within_s': a.timeout, 'failures': len(fails),
                  'p50_ms': round(pct(lat, .5)), 'p99_ms': round(pct(lat, .99)), 'max_ms': round(max(lat) if lat else 0),
                  'by_kind_p50_ms': {k: round(pct(v, .5)) for k, v in kinds.items()}}))

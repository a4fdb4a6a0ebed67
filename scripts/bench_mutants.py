#!/usr/bin/env python3
"""Robustness of document extraction on byte-mutated files: sovrag must skip a bad file, never die or hang.

From --seed, picks source files from the corpus (half PDFs; the other half DOCX, ODT, PPTX, EPUB and
HTML, a fifth each) and writes --n mutated copies into a fresh temporary folder (never the project or
shared/), one of four kinds each:
  truncate   cut at a random offset
  flip       1-64 random sites, each a flipped bit or a random byte
  zero       a random block (1 B to 64 KiB) set to zero
  dup        a random block (1 B to 64 KiB) copied to a random offset
Then:
  1. `sovrag --data-dir TMP/data index TMP/docs` once (under --index-timeout): its exit status (0,
     not a signal or a panic), the indexed/skipped counts it prints, the reason of every skip it
     logs, and afterwards `sovrag --data-dir TMP/data status --json` (documents, problem_count);
  2. `sovrag extract FILE --json` per mutant: read, failed with a reason (the one-line error
     `FILE: <reason>: detail`), or the CLI itself died (signal / panic); the slowest file's wall
     time, and the files over sovrag's 30 s extraction limit plus --slack seconds (hangs);
  3. `sovrag extract` on each unmutated source too, as the control: how many mutants of readable
     sources still read;
  4. sovrag processes left running: any naming the temporary folder, and any extraction worker
     started since the benchmark began (orphaned workers).
Exits 1 if the index run failed or any CLI crash, hang or orphan was seen.

Needs only Python 3 and the sovrag binary; the embedding models are found in ~/.cache/sovrag/models.
Run (from the repository root):
  python3 scripts/bench_mutants.py --sovrag target/release/sovrag [--n 300] [--seed 7] [--keep]"""
import argparse, collections, json, os, random, re, shutil, subprocess, sys, tempfile, time

KINDS = ('truncate', 'flip', 'zero', 'dup')
OTHERS = ('docx', 'odt', 'pptx', 'epub', 'html')
REASONS = ('timeout', 'crash', 'too large', 'encrypted', 'no text layer', 'unreadable')
LIMIT_S = 30  # sovrag's default --extract-timeout


def default_sovrag():
    local = os.path.join(os.environ.get('CARGO_TARGET_DIR', 'target'), 'release', 'sovrag')
    return shutil.which('sovrag') or local


def mutate(data, kind, rng):
    b = bytearray(data)
    block = lambda: rng.randint(1, max(1, min(len(b), 64 << 10)))
    if kind == 'truncate':
        return bytes(b[:rng.randrange(len(b))])
    if kind == 'flip':
        for _ in range(rng.randint(1, 64)):
            i = rng.randrange(len(b))
            b[i] = b[i] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)
    elif kind == 'zero':
        n = block(); i = rng.randint(0, len(b) - n)
        b[i:i + n] = bytes(n)
    else:  # dup
        n = block(); i = rng.randint(0, len(b) - n); j = rng.randint(0, len(b))
        b[j:j] = b[i:i + n]
    return bytes(b)


def make_mutants(corpus, out, n, seed):
    rng = random.Random(seed)
    files = {d: sorted(os.listdir(os.path.join(corpus, d))) for d in ('pdf',) + OTHERS}
    mutants = {}
    for i in range(n):
        d = 'pdf' if rng.random() < 0.5 else rng.choice(OTHERS)
        src, kind = os.path.join(corpus, d, rng.choice(files[d])), rng.choice(KINDS)
        with open(src, 'rb') as f:
            data = f.read()
        name = f'{i:04d}-{kind}-{os.path.basename(src)}'
        with open(os.path.join(out, name), 'wb') as f:
            f.write(mutate(data, kind, rng) if data else data)
        mutants[name] = {'kind': kind, 'source': os.path.relpath(src, corpus)}
    return mutants


def crashed(rc, stderr):
    """How the sovrag CLI process itself died, if it did."""
    if rc < 0:
        return f'signal {-rc}'
    if 'panicked' in stderr:
        return 'panic'
    return None


def run_index(exe, data, docs, timeout):
    t0 = time.monotonic()
    try:
        p = subprocess.run([exe, '--data-dir', data, 'index', docs], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, 'NO_COLOR': '1'})
    except subprocess.TimeoutExpired:
        return {'completed': False, 'how': f'killed after {timeout} s', 'secs': time.monotonic() - t0, 'skips': {}}
    out = {'completed': p.returncode == 0 and not crashed(p.returncode, p.stderr), 'rc': p.returncode,
           'how': crashed(p.returncode, p.stderr), 'secs': time.monotonic() - t0, 'tail': p.stderr[-2000:]}
    m = re.search(r'indexed (\d+) files \((\d+) unchanged, (\d+) skipped', p.stdout)
    if m:
        out['indexed'], out['skipped'] = int(m.group(1)), int(m.group(3))
    # One line a skipped file: "... WARN skipped /path/to/file: reason: detail"
    out['skips'] = {os.path.basename(path): why for path, why in re.findall(r'WARN skipped (\S+): ([^:\n]+)', p.stderr)}
    st = subprocess.run([exe, '--data-dir', data, 'status', '--json'], capture_output=True, text=True, timeout=300)
    out['status'] = json.loads(st.stdout) if st.returncode == 0 else {'error': st.stderr.strip()[-300:]}
    return out


def run_extract(exe, path, slack):
    t0 = time.monotonic()
    try:
        p = subprocess.run([exe, 'extract', path, '--json'], capture_output=True, text=True,
                           timeout=LIMIT_S + slack + 60, env={**os.environ, 'NO_COLOR': '1'})
    except subprocess.TimeoutExpired:
        return {'outcome': 'hang (killed by the benchmark)', 'secs': time.monotonic() - t0}
    secs = time.monotonic() - t0
    how = crashed(p.returncode, p.stderr)
    if how:
        return {'outcome': f'CLI died: {how}', 'secs': secs, 'detail': p.stderr.strip()[-300:]}
    if p.returncode == 0:
        return {'outcome': 'read' if json.loads(p.stdout)['text'].strip() else 'read (empty)', 'secs': secs}
    lines = p.stderr.strip().splitlines() or ['']
    err = next((l for l in lines if l.startswith('sovrag: error: ')), lines[-1]).replace(f'sovrag: error: {path}: ', '')
    reason = next((r for r in REASONS if err.startswith(f'{r}:') or err == r), 'other error')
    return {'outcome': f'failed: {reason}', 'secs': secs, 'detail': err[:300]}


def processes(tag):
    """{pid: command line} of running processes whose command line mentions `tag`."""
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if tag in cmd and 'bench_mutants' not in cmd:
            found[pid] = cmd[:200]
    return found


def orphans(root, workers_before):
    """sovrag processes still running that name the temporary folder, and extraction workers
    (which serve many files, so name none) started since the benchmark began."""
    left = processes(root)
    left.update({p: c for p, c in processes('__extract-worker').items() if p not in workers_before})
    return [f'{pid}: {cmd}' for pid, cmd in left.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=300, help='mutants to make')
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--corpus', default=os.path.join('..', 'shared', 'bench', 'docs'))
    ap.add_argument('--sovrag', default=default_sovrag())
    ap.add_argument('--index-timeout', type=int, default=3600, help='seconds the index run may take')
    ap.add_argument('--slack', type=float, default=5.0, help=f'seconds over the {LIMIT_S} s limit that count as a hang')
    ap.add_argument('--keep', action='store_true', help='keep the temporary folder (mutants, data dir, results.json)')
    a = ap.parse_args()

    workers_before = processes("__extract-worker")
    root = tempfile.mkdtemp(prefix='sovrag-mutants-')
    docs, data = os.path.join(root, 'docs'), os.path.join(root, 'data')
    os.makedirs(docs)
    try:
        mutants = make_mutants(a.corpus, docs, a.n, a.seed)
        print(f'{len(mutants)} mutants (seed {a.seed}) in {docs}: '
              + ', '.join(f'{k} {v}' for k, v in sorted(collections.Counter(m['kind'] for m in mutants.values()).items())),
              file=sys.stderr, flush=True)
        index = run_index(a.sovrag, data, docs, a.index_timeout)
        print(f"index: {'completed' if index['completed'] else 'FAILED'} in {index['secs']:.0f} s", file=sys.stderr, flush=True)
        for i, (name, m) in enumerate(sorted(mutants.items()), 1):
            m['extract'] = run_extract(a.sovrag, os.path.join(docs, name), a.slack)
            m['index_skip'] = index['skips'].get(name)
            print(f"[{i}/{len(mutants)}] {name}: {m['extract']['outcome']} {m['extract']['secs']:.2f}s", file=sys.stderr, flush=True)
        control = {src: run_extract(a.sovrag, os.path.join(a.corpus, src), a.slack)['outcome']
                   for src in sorted({m['source'] for m in mutants.values()})}
        for m in mutants.values():
            m['source_outcome'] = control[m['source']]
        left = orphans(root, workers_before)
        with open(os.path.join(root, 'results.json'), 'w') as f:
            json.dump({'index': index, 'mutants': mutants, 'orphans': left}, f, indent=1)
        ok = report(mutants, index, left, a)
    finally:
        if a.keep:
            print(f'kept {root}')
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok else 1)


def report(mutants, index, left, a):
    ext = [m['extract'] for m in mutants.values()]
    outcomes = collections.Counter(e['outcome'] for e in ext)
    cli_crashes = [(n, m['extract']) for n, m in sorted(mutants.items()) if m['extract']['outcome'].startswith('CLI died')]
    hangs = [(n, m['extract']['secs']) for n, m in sorted(mutants.items())
             if m['extract']['secs'] > LIMIT_S + a.slack or m['extract']['outcome'].startswith('hang')]
    slow_name, slow = max(mutants.items(), key=lambda kv: kv[1]['extract']['secs'])
    st = index.get('status', {})
    index_crash = 0 if index['completed'] else 1
    print(f"Mutants: {len(mutants)} (seed {a.seed}) from {a.corpus}: "
          + ', '.join(f'{k} {v}' for k, v in sorted(collections.Counter(m['kind'] for m in mutants.values()).items()))
          + '; sources: ' + ', '.join(f'{k} {v}' for k, v in sorted(collections.Counter(
              os.path.dirname(m['source']) for m in mutants.values()).items())))
    print(f'sovrag = {a.sovrag}\n')
    print(f"{'index completed':34} {'y' if index['completed'] else 'n'}  (exit {index.get('rc')}, "
          f"{index['how'] or 'no crash'}, {index['secs']:.0f} s)")
    print(f"{'indexed / skipped (index output)':34} {index.get('indexed', '?')} / {index.get('skipped', '?')}")
    print(f"{'status: documents / problem_count':34} {st.get('documents', '?')} / {st.get('problem_count', '?')}"
          + (f"  ({st['error']})" if 'error' in st else ''))
    skips = collections.Counter(index['skips'].values())
    print(f"{'index skips by reason':34} " + (', '.join(f'{r} {c}' for r, c in skips.most_common()) or 'none'))
    print(f"{'extract outcomes':34} " + ', '.join(f'{o} {c}' for o, c in outcomes.most_common()))
    print(f"{'CLI crashes (index + extract)':34} {index_crash + len(cli_crashes)}")
    print(f"{f'hangs (over {LIMIT_S} + {a.slack:g} s)':34} {len(hangs)}")
    print(f"{'slowest extract':34} {slow['extract']['secs']:.2f} s  {slow_name} ({slow['extract']['outcome']})")
    print(f"{'orphaned sovrag processes':34} {len(left)}")

    print('\nextract by kind; the control is the unmutated source:')
    print(f"  {'':9} {'mutants':>7} {'read':>5} {'failed':>6} {'died':>5} {'source read':>12} {'of those, still read':>21}")
    for kind in ('all',) + KINDS:
        ms = [m for m in mutants.values() if kind in ('all', m['kind'])]
        out = [m['extract']['outcome'] for m in ms]
        src_read = [m for m in ms if m['source_outcome'] == 'read']
        print(f"  {kind:9} {len(ms):7} {sum(o.startswith('read') for o in out):5} {sum(o.startswith('failed') for o in out):6} "
              f"{sum(o.startswith(('CLI', 'hang')) for o in out):5} {len(src_read):12} "
              f"{sum(m['extract']['outcome'] == 'read' for m in src_read):21}")
    disagree = [n for n, m in sorted(mutants.items())
                if m['extract']['outcome'].startswith('failed') != bool(m['index_skip'])
                or (m['index_skip'] and not m['extract']['outcome'].endswith(m['index_skip']))]
    print(f'\nindex and extract disagree on {len(disagree)} files' + (': ' + ', '.join(
        f"{n} (index {mutants[n]['index_skip'] or 'indexed'}, extract {mutants[n]['extract']['outcome']})"
        for n in disagree[:10]) if disagree else ''))
    for n, e in cli_crashes:
        print(f"  CLI died: {n}: {e.get('detail', '')}")
    for n, secs in hangs:
        print(f'  over the limit: {n}: {secs:.1f} s')
    for line in left:
        print(f'  orphan: {line}')
    if not index['completed']:
        print(f"  index stderr tail:\n{index.get('tail', '')}")
    return index['completed'] and not cli_crashes and not hangs and not left


if __name__ == '__main__':
    main()

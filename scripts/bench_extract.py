#!/usr/bin/env python3
"""PDF text extraction: sovrag against PDFium (pypdfium2) and pypdf, quality and speed, same files.

For every PDF in --folder, one file at a time and one extractor at a time (each single-threaded,
nothing else of ours running alongside):
  - sovrag: one `sovrag extract --json FILE...` over all the files, as indexing reads a folder:
    the CLI hands them one by one to its isolated extraction worker (a separate process that
    serves many files). A file's time is the wall time from the previous file's line to its own,
    so the CLI's and the worker's start are counted, in the first file's time. sovrag runs over
    every file before the baselines start, so nothing else of ours runs beside it;
  - PDFium: pypdfium2, page.get_textpage().get_text_range() for every page;
  - pypdf: PdfReader(FILE).pages[i].extract_text() for every page.
The two Python baselines run in a long-lived worker process each too, timed in-process (open + all
pages, excluding interpreter start and imports), under the same limits as sovrag's worker: --timeout
seconds a file (the worker is killed and restarted on a timeout or a crash) and a 2 GiB address space.

Quality: bag-of-words F1 of sovrag's text against PDFium's, 2|A∩B| / (|A| + |B|) over token
multisets. Tokens: the text NFKC-normalised and lowercased, sovrag's Markdown heading markers
(`#`..`######` at a line start) removed, then maximal runs of Unicode letters/digits ([^\W_]+). PDFium
marks a hyphen it dropped at a line end with U+FFFE inside the word; that mark is removed, so the
reference reads "partitioning", not "parti" "tioning". pypdf's F1 against PDFium is given for
context. Median and mean per file, and one pooled F1 over all tokens, over the files both sovrag and
PDFium read ("read": succeeded with at least one token).
Speed: pages (PDFium's count) and seconds summed over the files all three read; pages/s for sovrag
over every file it read uses its own page count.

Needs a venv with pypdfium2 and pypdf:
  python3 -m venv /tmp/extractbench && /tmp/extractbench/bin/pip install pypdfium2 pypdf
Run (from the repository root):
  /tmp/extractbench/bin/python scripts/bench_extract.py --sovrag target/release/sovrag \\
      [--folder ../shared/bench/docs/pdf] [--limit N] [--timeout 30] [--json rows.json]"""
import argparse, collections, json, multiprocessing as mp, os, re, shutil, statistics, subprocess, sys, time, unicodedata

REASONS = ('timeout', 'crash', 'too large', 'encrypted', 'no text layer', 'unreadable')
HEADING = re.compile(r'^#{1,6}[ \t]+', re.M)
WORD = re.compile(r'[^\W_]+')


def tokens(text, markdown=False):
    text = unicodedata.normalize('NFKC', text).lower()
    if markdown:
        text = HEADING.sub('', text)
    return collections.Counter(WORD.findall(text))


def f1(common, got, ref):
    return 2 * common / (got + ref) if common else 0.0


def default_sovrag():
    local = os.path.join(os.environ.get('CARGO_TARGET_DIR', 'target'), 'release', 'sovrag')
    return shutil.which('sovrag') or local


# ---- Python baselines, each in its own worker process -------------------------------------------

def read_pdfium(path):
    import pypdfium2 as pdfium
    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as e:  # "Failed to load document (PDFium: Data format error)."
        why = re.sub(r'.*\(PDFium: (.*)\)\.?$', r'\1', str(e))
        return {'error': 'encrypted' if 'password' in why.lower() else why}
    texts = []
    for i in range(len(pdf)):
        page = pdf[i]
        tp = page.get_textpage()
        texts.append(tp.get_text_range().replace('\ufffe', ''))  # U+FFFE: a line-end hyphen, word goes on
        tp.close(); page.close()
    pdf.close()
    return {'pages': len(texts), 'text': '\n'.join(texts)}


def read_pypdf(path):
    from pypdf import PdfReader
    reader = PdfReader(path)
    texts = [page.extract_text() or '' for page in reader.pages]
    return {'pages': len(texts), 'text': '\n'.join(texts)}


def worker_loop(conn, name):
    import importlib, logging, resource, warnings
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    warnings.simplefilter('ignore')
    logging.disable(logging.CRITICAL)
    fn = {'pdfium': read_pdfium, 'pypdf': read_pypdf}[name]
    importlib.import_module({'pdfium': 'pypdfium2', 'pypdf': 'pypdf'}[name])  # import before timing
    while True:
        path = conn.recv()
        t0 = time.perf_counter()
        try:
            out = fn(path)
        except BaseException as e:  # noqa: BLE001 - every failure of the baseline is a result
            out = {'error': f'{type(e).__name__}: {e}'[:200]}
        out['secs'] = time.perf_counter() - t0
        conn.send(out)


class Baseline:
    """A worker process for one baseline; killed and restarted on a timeout or crash."""

    def __init__(self, name, timeout):
        self.name, self.timeout, self.proc = name, timeout, None

    def start(self):
        ctx = mp.get_context('spawn')
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_loop, args=(child, self.name), daemon=True)
        self.proc.start()

    def stop(self):
        if self.proc:
            self.proc.kill(); self.proc.join(); self.proc = None

    def read(self, path):
        if not self.proc:
            self.start()
        self.conn.send(path)
        if self.conn.poll(self.timeout):
            try:
                return self.conn.recv()
            except EOFError:
                self.stop()
                return {'error': 'crash', 'secs': None}
        self.stop()
        return {'error': 'timeout', 'secs': self.timeout}


# ---- sovrag ---------------------------------------------------------------------------------------

def read_sovrag_all(exe, paths, timeout):
    """Rows for `paths`, in order, from as few `sovrag extract` runs as it takes (one, unless
    the CLI itself dies: then a new one goes on after the file it died on)."""
    import queue, threading
    rows = []
    while len(rows) < len(paths):
        rest = paths[len(rows):]
        t0 = time.perf_counter()
        p = subprocess.Popen([exe, 'extract', '--json', *rest], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, 'NO_COLOR': '1'})
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in p.stdout] + [lines.put(None)],
                         daemon=True).start()
        err_tail = []
        threading.Thread(target=lambda: [err_tail.append(l) for l in p.stderr], daemon=True).start()
        last = t0
        for path in rest:
            try:
                line = lines.get(timeout=timeout + 30)
            except queue.Empty:
                line = 'hang'
            now = time.perf_counter()
            if line in (None, 'hang'):
                p.kill(); p.wait()
                died = 'hang (killed by the benchmark)' if line == 'hang' else \
                    (f'CLI died: signal {-p.returncode}' if (p.returncode or 0) < 0 else 'CLI died')
                rows.append({'error': died, 'detail': ''.join(err_tail[-3:])[-200:], 'secs': now - last})
                break
            d = json.loads(line)
            assert d['path'] == path, (d['path'], path)
            if 'error' in d:
                rows.append({'error': d['reason'], 'detail': d['error'][:200], 'secs': now - last})
            else:
                rows.append({'pages': len(d['pages']), 'text': d['text'], 'secs': now - last})
            last = now
        else:
            p.wait()
    return rows


# ---- run and report -------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--folder', default=os.path.join('..', 'shared', 'bench', 'docs', 'pdf'))
    ap.add_argument('--sovrag', default=default_sovrag())
    ap.add_argument('--limit', type=int, default=0, help='first N files (sorted by name); 0: all')
    ap.add_argument('--timeout', type=float, default=30.0, help="per-file limit for the baselines (sovrag's default too)")
    ap.add_argument('--json', help='write per-file rows here')
    a = ap.parse_args()

    files = sorted(f for f in os.listdir(a.folder) if f.lower().endswith('.pdf'))
    if a.limit:
        files = files[:a.limit]
    paths = [os.path.join(a.folder, name) for name in files]
    sovrag_rows = read_sovrag_all(a.sovrag, paths, a.timeout)
    baselines = {n: Baseline(n, a.timeout) for n in ('pdfium', 'pypdf')}
    rows = []
    for i, (name, path, sov) in enumerate(zip(files, paths, sovrag_rows), 1):
        row = {'file': name, 'sovrag': sov}
        for n, b in baselines.items():
            row[n] = b.read(path)
        toks = {n: tokens(row[n].pop('text', ''), markdown=(n == 'sovrag')) for n in ('sovrag', 'pdfium', 'pypdf')}
        for n in toks:
            row[n]['read'] = 'error' not in row[n] and bool(toks[n])
            row[n]['tokens'] = sum(toks[n].values())
        if row['pdfium']['read']:
            for n in ('sovrag', 'pypdf'):
                if row[n]['read']:
                    row[n]['common'] = sum((toks[n] & toks['pdfium']).values())
                    row[n]['f1'] = round(f1(row[n]['common'], row[n]['tokens'], row['pdfium']['tokens']), 4)
        rows.append(row)
        s = row['sovrag']
        print(f"[{i}/{len(files)}] {name}: sovrag {s.get('error') or 'f1=%s' % s.get('f1', '-')} {s['secs']:.2f}s",
              file=sys.stderr, flush=True)
    for b in baselines.values():
        b.stop()
    if a.json:
        with open(a.json, 'w') as f:
            json.dump(rows, f, indent=1)
    report(rows, a)


def stats(xs):
    return (statistics.median(xs), statistics.mean(xs)) if xs else (float('nan'), float('nan'))


def report(rows, a):
    names = ('sovrag', 'pdfium', 'pypdf')
    read = {n: [r for r in rows if r[n]['read']] for n in names}
    print(f'PDF extraction, {len(rows)} files from {a.folder}; sovrag = {a.sovrag}')
    print('Each extractor single-threaded, run alone, one file at a time; sovrag timed wall-clock between its'
          ' output lines (one CLI and its worker over all files, starts included), the baselines in-process.'
          ' Per-file limit %gs, 2 GiB address space.' % a.timeout)
    print('\nFiles read (succeeded with >= 1 token):')
    for n in names:
        failed = collections.Counter(r[n]['error'] for r in rows if 'error' in r[n])
        empty = sum(1 for r in rows if 'error' not in r[n] and not r[n]['read'])
        print(f'  {n:7} {len(read[n]):4}   failed {sum(failed.values()):3}   succeeded but empty {empty:3}')
    both = [r for r in rows if r['sovrag']['read'] and r['pdfium']['read']]
    print(f"  sovrag and PDFium both: {len(both)}; PDFium only: "
          f"{sum(1 for r in rows if r['pdfium']['read'] and not r['sovrag']['read'])}; sovrag only: "
          f"{sum(1 for r in rows if r['sovrag']['read'] and not r['pdfium']['read'])}")
    print('\nsovrag failures by reason:')
    for reason, c in collections.Counter(r['sovrag']['error'] for r in rows if 'error' in r['sovrag']).most_common():
        print(f'  {reason:14} {c}')
    for n in ('pdfium', 'pypdf'):
        c = collections.Counter(r[n]['error'].split(':')[0] for r in rows if 'error' in r[n])
        print(f'{n} failures: ' + (', '.join(f'{k} {v}' for k, v in c.most_common()) or 'none'))

    print('\nWord F1 against PDFium (bag of words, NFKC + lowercase, runs of letters/digits):')
    print(f"  {'':7} {'files':>5} {'median':>7} {'mean':>7} {'<0.5':>5} {'pooled':>7}   (pooled: one F1 over all their tokens)")
    for n in ('sovrag', 'pypdf'):
        scored = [r for r in rows if 'f1' in r[n]]
        med, mean = stats([r[n]['f1'] for r in scored])
        pooled = f1(*(sum(r[m][k] for r in scored) for m, k in ((n, 'common'), (n, 'tokens'), ('pdfium', 'tokens'))))
        print(f"  {n:7} {len(scored):5} {med:7.3f} {mean:7.3f} {sum(r[n]['f1'] < 0.5 for r in scored):5} {pooled:7.3f}")
    low = sorted((r for r in both), key=lambda r: r['sovrag']['f1'])[:10]
    print('  lowest sovrag F1: ' + ', '.join(f"{r['file']} {r['sovrag']['f1']:.2f}" for r in low))

    all3 = [r for r in rows if all(r[n]['read'] for n in names)]
    pages = sum(r['pdfium']['pages'] for r in all3)
    print(f'\nSpeed over the {len(all3)} files all three read ({pages} pages, PDFium\'s count):')
    print(f"  {'':7} {'seconds':>8} {'pages/s':>8} {'median s/file':>14}")
    pps = {}
    for n in names:
        secs = sum(r[n]['secs'] for r in all3)
        pps[n] = pages / secs if secs else float('nan')
        print(f"  {n:7} {secs:8.2f} {pps[n]:8.1f} {stats([r[n]['secs'] for r in all3])[0]:14.3f}")
    print(f"  sovrag/pypdfium2 {pps['sovrag'] / pps['pdfium']:.2f}x   sovrag/pypdf {pps['sovrag'] / pps['pypdf']:.2f}x (pages/s ratio)")
    spages, ssecs = sum(r['sovrag']['pages'] for r in read['sovrag']), sum(r['sovrag']['secs'] for r in read['sovrag'])
    print(f"  sovrag over all {len(read['sovrag'])} files it read: {spages} pages in {ssecs:.2f} s = {spages / ssecs:.1f} pages/s")
    slow = max(rows, key=lambda r: r['sovrag']['secs'])
    print(f"  sovrag first file (includes starting the CLI and its worker): {rows[0]['sovrag']['secs']:.3f} s;"
          f" slowest: {slow['file']} {slow['sovrag']['secs']:.2f} s ({slow['sovrag'].get('error', 'read')})")

    print('\nDisagreements:')
    notes = []
    for r in rows:
        s, p = r['sovrag'], r['pdfium']
        if p['read'] and not s['read']:
            notes.append(f"PDFium reads, sovrag {s.get('error', 'empty')}: {r['file']}  {s.get('detail', '')}")
        elif s['read'] and not p['read']:
            notes.append(f"sovrag reads ({s['tokens']} tokens), PDFium {p.get('error', 'empty')}: {r['file']}")
        elif p.get('error') == 'encrypted' and s.get('error') != 'encrypted':
            notes.append(f"PDFium needs a password, sovrag {s.get('error', 'read')}: {r['file']}  {s.get('detail', '')}")
        elif s['read'] and p['read'] and s['pages'] != p['pages']:
            notes.append(f"page count sovrag {s['pages']} vs PDFium {p['pages']}: {r['file']}")
    print('\n'.join('  ' + n for n in notes) or '  none')


if __name__ == '__main__':
    main()

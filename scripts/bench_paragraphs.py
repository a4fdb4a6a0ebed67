#!/usr/bin/env python3
"""Paragraph coverage: does every paragraph of a DOCX, ODT or HTML/XHTML document reach sovrag's text?

What it measures. For every file in --folder/{docx,odt,html,xhtml}, one file at a time:
  - sovrag's text: `SOVRAG --data-dir TMP extract FILE --json`, its `text` field (what sovrag indexes);
    a non-zero exit counts as a failure, by the reason on stderr (`sovrag: error: FILE: REASON: ...`);
  - reference paragraphs, parsed here independently with the standard library only:
      DOCX  word/document.xml (zipfile + xml.etree): each w:p's text = its w:t texts concatenated,
            w:tab/w:ptab -> space, w:br/w:cr -> newline, w:noBreakHyphen -> '-'; the m:t runs of
            an Office Math equation count as text too (they are visible), concatenated in order.
            Tables, text boxes and content controls included; headers, footers, footnotes and comments (other parts) are not.
            A paragraph nested in another (text box in a run) counts on its own and is not part of the
            outer one's text. mc:Fallback is skipped (it repeats the mc:Choice text box). w:delText
            (deleted text) and w:instrText (field codes) are not w:t and so are not counted.
      ODT   content.xml, office:body: each text:p and text:h's text (itertext, text:s -> space(s),
            text:tab -> space, text:line-break -> newline). A note's citation mark stays in its
            paragraph, the note body's paragraphs count on their own; paragraphs in frames/text boxes
            likewise. office:annotation (comments) and text:tracked-changes (deleted text) are skipped.
      HTML  html.parser: the text of each block element (p, h1-h6, li, td, th, pre, blockquote, dt, dd,
            figcaption, caption), nothing inside script/style/head/template/noscript/title; <br> ->
            newline. A block's text is its inner text; where a block holds another block (an li with a
            nested list, a blockquote of p's) the inner block counts on its own and the outer one's
            own text on each side of it is a separate reference paragraph (the page breaks there too).
    Each reference paragraph is tagged with where it sits (table, textbox, note, nav, hidden, ...), so
    the report can say in which kind of element the missing ones are.
  - Normalisation, both sides the same: NFKC, every whitespace run -> one space, strip. sovrag's
    Markdown heading markers (`#`..`######` and one space at a line start) are removed and its lines
    joined with a single space, so a paragraph with internal line breaks can still match.
  - A reference paragraph is found if its normalised text is a substring of sovrag's normalised
    whole text: case-sensitively (the headline figure) and also case-insensitively (casefold).
    Reference paragraphs shorter than 3 characters or without any letter/digit are ignored.
Reported per format: files, files sovrag read, failures by reason, files whose reference could not be
parsed, paragraphs checked and found, share found, files at 100%, missing paragraphs by where they sit,
and the 10 worst files with example missing paragraphs. A side check counts reference paragraphs of 20+
characters that are whole lines of sovrag's text more often than the document holds them (text read twice).
Limits: substring matching is lenient for short paragraphs ("Yes" is found almost anywhere); the
reference counts text that CSS may hide (icon-only button labels) and cannot see headers, footers,
footnotes or comments of a DOCX; text sovrag adds (e.g. deleted tracked changes) is not measured.

Run (from the repository root; stdlib only, one sovrag process at a time):
  python3 scripts/bench_paragraphs.py [--sovrag /tmp/sovrag-bench-bin] [--folder ../shared/bench/docs] \\
      [--json rows.json] [--timeout 120] [--formats docx,odt,html,xhtml]
The run saved in /tmp/bench_paragraphs.txt:
  python3 scripts/bench_paragraphs.py --json /tmp/bench_paragraphs.json > /tmp/bench_paragraphs.txt"""
import argparse, collections, html.parser, json, os, re, shutil, subprocess, sys, tempfile, time
import unicodedata, zipfile
import xml.etree.ElementTree as ET

FORMATS = {'docx': ('.docx',), 'odt': ('.odt',), 'html': ('.html', '.htm'), 'xhtml': ('.xhtml', '.xht')}
WS = re.compile(r'\s+')
HEADING = re.compile(r'^#{1,6} ', re.M)
LINE_MARK = re.compile(r'^\s*(?:[-*>] )+')


def norm(s):
    return WS.sub(' ', unicodedata.normalize('NFKC', s)).strip()


def countable(s):
    return len(s) >= 3 and any(ch.isalnum() for ch in s)


# ---- DOCX -----------------------------------------------------------------------------------------

W = '{http://schemas.openxmlformats.org/wordprocessingml/2006/main}'
MC = '{http://schemas.openxmlformats.org/markup-compatibility/2006}'
M = '{http://schemas.openxmlformats.org/officeDocument/2006/math}'
V = '{urn:schemas-microsoft-com:vml}'


def docx_paragraphs(path):
    with zipfile.ZipFile(path) as z:
        root = ET.fromstring(z.read('word/document.xml'))
    out = []  # (text, context tags)

    def is_on(el):
        return el is not None and el.get(W + 'val', 'true') not in ('0', 'false', 'off')

    def para(p, ctx):
        parts, tags = [], set(ctx)

        def gather(el, ctx, hidden):
            for ch in el:
                t = ch.tag
                if t == MC + 'Fallback':
                    continue
                if t == W + 'p':
                    para(ch, ctx)
                    continue
                c = ctx
                if t == W + 'txbxContent' or t == V + 'textbox':
                    c = ctx | {'textbox'}
                elif t == W + 'tc':
                    c = ctx | {'table'}
                h = hidden
                if t == W + 'r':
                    rpr = ch.find(W + 'rPr')
                    h = hidden or (rpr is not None and is_on(rpr.find(W + 'vanish')))
                if t == W + 't' or t == M + 't':
                    parts.append(ch.text or '')
                    if t == M + 't':
                        tags.add('math')
                    if h:
                        tags.add('hidden (w:vanish)')
                elif t in (W + 'tab', W + 'ptab'):
                    parts.append(' ')
                elif t in (W + 'br', W + 'cr'):
                    parts.append('\n')
                elif t == W + 'noBreakHyphen':
                    parts.append('-')
                else:
                    if t in (W + 'fldChar', W + 'fldSimple'):
                        tags.add('field')
                    elif t == W + 'hyperlink':
                        tags.add('hyperlink')
                    elif t == W + 'sdt':
                        tags.add('content control')
                    elif t == W + 'ins':
                        tags.add('tracked insertion')
                    gather(ch, c, h)

        ppr = p.find(W + 'pPr')
        hidden_mark = ppr is not None and ppr.find(W + 'rPr') is not None and is_on(ppr.find(W + 'rPr').find(W + 'vanish'))
        gather(p, ctx, False)
        if hidden_mark:
            tags.add('hidden (w:vanish)')
        out.append((''.join(parts), tags))

    def walk(el, ctx):
        for ch in el:
            if ch.tag == MC + 'Fallback':
                continue
            if ch.tag == W + 'p':
                para(ch, ctx)
            else:
                c = ctx
                if ch.tag == W + 'tc':
                    c = ctx | {'table'}
                elif ch.tag in (W + 'txbxContent', V + 'textbox'):
                    c = ctx | {'textbox'}
                elif ch.tag == W + 'sdtContent':
                    c = ctx | {'content control'}
                walk(ch, c)

    walk(root, frozenset())
    return out


# ---- ODT ------------------------------------------------------------------------------------------

TEXT = '{urn:oasis:names:tc:opendocument:xmlns:text:1.0}'
OFFICE = '{urn:oasis:names:tc:opendocument:xmlns:office:1.0}'
TABLE = '{urn:oasis:names:tc:opendocument:xmlns:table:1.0}'
DRAW = '{urn:oasis:names:tc:opendocument:xmlns:drawing:1.0}'
STYLE = '{urn:oasis:names:tc:opendocument:xmlns:style:1.0}'
SVG = '{urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0}'


def odt_paragraphs(path):
    with zipfile.ZipFile(path) as z:
        root = ET.fromstring(z.read('content.xml'))
        try:
            styles = ET.fromstring(z.read('styles.xml'))
        except KeyError:
            styles = None
    hidden_styles = set()
    for tree in (root, styles):
        if tree is None:
            continue
        for st in tree.iter(STYLE + 'style'):
            tp = st.find(STYLE + 'text-properties')
            if tp is not None and tp.get(TEXT + 'display') == 'none':
                hidden_styles.add(st.get(STYLE + 'name'))
    body = root.find(OFFICE + 'body')
    out = []
    SKIP = {OFFICE + 'annotation', OFFICE + 'annotation-end', TEXT + 'tracked-changes', SVG + 'title', SVG + 'desc'}

    def para(p, ctx):
        parts, tags = [], set(ctx)
        if p.get(TEXT + 'style-name') in hidden_styles:
            tags.add('hidden (style)')

        def gather(el, ctx):
            for ch in el:
                t = ch.tag
                if t in SKIP:
                    pass
                elif t in (TEXT + 'p', TEXT + 'h'):
                    para(ch, ctx)
                elif t == TEXT + 's':
                    parts.append(' ' * int(ch.get(TEXT + 'c', '1')))
                elif t == TEXT + 'tab':
                    parts.append(' ')
                elif t == TEXT + 'line-break':
                    parts.append('\n')
                elif t == TEXT + 'note':
                    tags.add('note citation')
                    cit = ch.find(TEXT + 'note-citation')
                    if cit is not None:
                        parts.append(''.join(cit.itertext()))
                    nb = ch.find(TEXT + 'note-body')
                    if nb is not None:
                        walk(nb, ctx | {'note body'})
                elif t == DRAW + 'text-box':
                    walk(ch, ctx | {'textbox'})
                elif t == DRAW + 'frame':
                    gather_frame(ch, ctx)
                else:
                    if t in (TEXT + 'hidden-text', TEXT + 'hidden-paragraph'):
                        tags.add('hidden (conditional)')
                    elif ch.get(TEXT + 'style-name') in hidden_styles:
                        tags.add('hidden (style)')
                    elif t.startswith(TEXT) and t[len(TEXT):] in (
                            'variable-get', 'variable-set', 'user-field-get', 'expression', 'sequence',
                            'reference-ref', 'bookmark-ref', 'sequence-ref', 'note-ref', 'chapter',
                            'date', 'time', 'page-number', 'text-input', 'placeholder'):
                        tags.add('field')
                    if ch.text:
                        parts.append(ch.text)
                    gather(ch, ctx)
                if ch.tail:
                    parts.append(ch.tail)

        def gather_frame(fr, ctx):
            for ch in fr:
                if ch.tag == DRAW + 'text-box':
                    walk(ch, ctx | {'textbox'})

        if p.text:
            parts.append(p.text)
        gather(p, ctx)
        out.append((''.join(parts), tags))

    def walk(el, ctx):
        for ch in el:
            t = ch.tag
            if t in SKIP:
                continue
            if t in (TEXT + 'p', TEXT + 'h'):
                para(ch, ctx | ({'heading'} if t == TEXT + 'h' else set()))
                continue
            c = ctx
            if t == TABLE + 'table-cell':
                c = ctx | {'table'}
            elif t == DRAW + 'text-box':
                c = ctx | {'textbox'}
            elif t == TEXT + 'list-item':
                c = ctx | {'list'}
            elif t in (TEXT + 'index-body', TEXT + 'table-of-content'):
                c = ctx | {'index/TOC'}
            elif t == TEXT + 'section' and (ch.get(TEXT + 'display') == 'none' or ch.get(TEXT + 'condition')):
                c = ctx | {'hidden (section)'}
            walk(ch, c)

    if body is not None:
        walk(body, frozenset())
    return out


# ---- HTML / XHTML ---------------------------------------------------------------------------------

BLOCKS = {'p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'li', 'td', 'th', 'pre', 'blockquote', 'dt', 'dd',
          'figcaption', 'caption'}
EXCLUDED = {'script', 'style', 'head', 'template', 'noscript', 'title'}
VOID = {'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'param', 'source',
        'track', 'wbr', 'keygen', 'basefont', 'frame'}
CLOSES_P = {'address', 'article', 'aside', 'blockquote', 'details', 'div', 'dl', 'fieldset', 'figcaption',
            'figure', 'footer', 'form', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'header', 'hgroup', 'hr',
            'main', 'menu', 'nav', 'ol', 'p', 'pre', 'section', 'table', 'ul', 'li', 'dd', 'dt'}
CONTEXT_TAGS = {'nav', 'header', 'footer', 'aside', 'form', 'table', 'figure', 'sup', 'sub', 'math', 'svg',
                'button', 'select', 'label', 'details', 'ruby', 'rt', 'a', 'code', 'abbr'}
HIDDEN_STYLE = re.compile(r'display\s*:\s*none|visibility\s*:\s*hidden', re.I)


class BlockParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []      # [tag, is_block, context tags]
        self.blocks = []     # open blocks: [buffer parts, context tags at open, tags seen inside]
        self.out = []
        self.excluded = 0

    def _ctx(self):
        return self.stack[-1][2] if self.stack else frozenset()

    def _flush(self, blk):
        if blk[0]:
            self.out.append((''.join(blk[0]), set(blk[1]) | blk[2]))
            blk[0] = []

    def _pop(self):
        tag, is_block, _ = self.stack.pop()
        if tag in EXCLUDED:
            self.excluded -= 1
        if is_block:
            self._flush(self.blocks.pop())
            if self.blocks:
                self.blocks[-1][0] = []

    def _close_to(self, tag, stop):
        """Close the innermost open `tag` unless one of `stop` is open inside it."""
        for i in range(len(self.stack) - 1, -1, -1):
            t = self.stack[i][0]
            if t == tag:
                while len(self.stack) > i:
                    self._pop()
                return
            if t in stop:
                return

    def handle_starttag(self, tag, attrs):
        if tag in CLOSES_P:
            self._close_to('p', {'button', 'table', 'td', 'th', 'li', 'dd', 'dt', 'blockquote', 'div'} - {tag})
        if tag == 'li':
            self._close_to('li', {'ul', 'ol', 'menu'})
        elif tag in ('dt', 'dd'):
            self._close_to('dt', {'dl'}); self._close_to('dd', {'dl'})
        elif tag in ('td', 'th'):
            self._close_to('td', {'tr', 'table'}); self._close_to('th', {'tr', 'table'})
        elif tag == 'tr':
            self._close_to('tr', {'table', 'tbody', 'thead', 'tfoot'})
        elif tag in ('tbody', 'thead', 'tfoot'):
            for t in ('tr', 'tbody', 'thead', 'tfoot'):
                self._close_to(t, {'table'})
        if tag == 'br':
            if self.blocks and not self.excluded:
                self.blocks[-1][0].append('\n')
            return
        if tag in VOID:
            return
        a = dict(attrs)
        ctx = self._ctx()
        if tag in CONTEXT_TAGS:
            ctx = ctx | {tag}
        if 'hidden' in a or (a.get('aria-hidden') == 'true') or HIDDEN_STYLE.search(a.get('style') or ''):
            ctx = ctx | {'hidden'}
        is_block = tag in BLOCKS
        if tag in EXCLUDED:
            self.excluded += 1
        self.stack.append([tag, is_block, ctx])
        if is_block:
            if self.blocks:
                self._flush(self.blocks[-1])
                self.blocks[-1][2].add('has nested block')
            self.blocks.append([[], ctx | {tag}, set()])
        elif self.blocks and tag in CONTEXT_TAGS:
            self.blocks[-1][2].add('contains ' + tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                while len(self.stack) > i:
                    self._pop()
                return

    def handle_data(self, data):
        if self.blocks and not self.excluded:
            self.blocks[-1][0].append(data)

    def finish(self):
        self.close()
        while self.stack:
            self._pop()
        return self.out


def html_paragraphs(path):
    with open(path, 'rb') as f:
        raw = f.read()
    m = re.search(rb'<meta[^>]+charset=["\']?([\w-]+)', raw[:4096], re.I)
    enc = m.group(1).decode() if m else 'utf-8'
    try:
        text = raw.decode(enc, errors='replace')
    except LookupError:
        text = raw.decode('utf-8', errors='replace')
    p = BlockParser()
    p.feed(text)
    return p.finish()


READERS = {'docx': docx_paragraphs, 'odt': odt_paragraphs, 'html': html_paragraphs, 'xhtml': html_paragraphs}


# ---- sovrag ---------------------------------------------------------------------------------------

def read_sovrag(exe, data_dir, path, timeout):
    try:
        p = subprocess.run([exe, '--data-dir', data_dir, 'extract', path, '--json'], capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, 'NO_COLOR': '1'})
    except subprocess.TimeoutExpired:
        return {'error': 'hang (killed by the benchmark)'}
    if p.returncode < 0 or 'panicked' in p.stderr:
        return {'error': f'CLI died: signal {-p.returncode}' if p.returncode < 0 else 'CLI died: panic',
                'detail': p.stderr.strip()[-200:]}
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines() or ['']
        err = next((l for l in lines if l.startswith('sovrag: error: ')), lines[-1])
        err = err.replace('sovrag: error: ', '', 1).replace(f'{path}: ', '', 1)
        return {'error': err.split(':', 1)[0].strip() or 'unknown', 'detail': err[:200]}
    try:
        return {'text': json.loads(p.stdout)['text']}
    except (ValueError, KeyError) as e:
        return {'error': 'bad JSON on stdout', 'detail': str(e)[:200]}


def sovrag_haystack(text):
    return norm(' '.join(HEADING.sub('', text).splitlines()))


# ---- run and report -------------------------------------------------------------------------------

def check_file(exe, data_dir, fmt, path, timeout):
    row = {'format': fmt, 'file': os.path.basename(path)}
    try:
        ref = READERS[fmt](path)
    except Exception as e:  # a malformed file: no reference to compare against
        row['ref_error'] = f'{type(e).__name__}: {e}'[:200]
        ref = None
    if ref is not None:
        row['ref_paragraphs'] = sum(1 for text, _ in ref if countable(norm(text)))
    s = read_sovrag(exe, data_dir, path, timeout)
    if 'error' in s:
        row['sovrag_error'] = s['error']
        row['sovrag_detail'] = s.get('detail', '')
        return row
    if ref is None:
        return row
    hay = sovrag_haystack(s['text'])
    hay_ci = hay.casefold()
    paras = []
    for text, tags in ref:
        n = norm(text)
        if countable(n):
            paras.append((n, tags))
    missing, found, found_ci = [], 0, 0
    for n, tags in paras:
        if n in hay:
            found += 1; found_ci += 1
        elif n.casefold() in hay_ci:
            found_ci += 1
            missing.append({'text': n, 'where': sorted(tags), 'case_only': True})
        else:
            missing.append({'text': n, 'where': sorted(tags), 'case_only': False})
    # a side check: long paragraphs that are whole lines of sovrag's text more often than the document
    # holds them (list markers `- ` and quote markers `> ` taken off the line start)
    lines = collections.Counter(norm(LINE_MARK.sub('', l)) for l in HEADING.sub('', s['text']).splitlines())
    ref_count = collections.Counter(n for n, _ in paras if len(n) >= 20)
    repeated = [n for n, c in ref_count.items() if lines[n] > c]
    row.update(checked=len(paras), found=found, found_ci=found_ci, sovrag_chars=len(hay), missing=missing,
               repeated=repeated)
    return row


def pct(a, b):
    return f'{100 * a / b:5.1f}%' if b else '   n/a'


def report(rows, fmts):
    for fmt in fmts:
        fr = [r for r in rows if r['format'] == fmt]
        if not fr:
            continue
        read = [r for r in fr if 'sovrag_error' not in r]
        scored = [r for r in read if 'checked' in r]
        checked = sum(r['checked'] for r in scored)
        found = sum(r['found'] for r in scored)
        found_ci = sum(r['found_ci'] for r in scored)
        with_paras = [r for r in scored if r['checked']]
        full = sum(1 for r in with_paras if r['found'] == r['checked'])
        print(f'\n=== {fmt.upper()} ===')
        print(f'  files                     {len(fr)}')
        print(f'  read by sovrag            {len(read)}')
        fails = collections.Counter(r['sovrag_error'] for r in fr if 'sovrag_error' in r)
        print(f'  failed                    {sum(fails.values())}'
              + ''.join(f'\n    {k}: {v}' for k, v in fails.most_common()))
        for r in fr:
            if 'sovrag_error' in r:
                print(f'      {r["file"]}: {r["sovrag_detail"][:150]} '
                      f'[reference paragraphs: {r.get("ref_paragraphs", "unparsable")}]')
        ref_err = [r for r in read if 'ref_error' in r]
        if ref_err:
            print(f'  read by sovrag, reference unparsable: {len(ref_err)}')
            for r in ref_err:
                print(f'      {r["file"]}: {r["ref_error"][:150]}')
        print(f'  paragraphs checked        {checked}  (in {len(with_paras)} files with any)')
        print(f'  paragraphs found          {found}  ({pct(found, checked).strip()})')
        print(f'  found ignoring case       {found_ci}  ({pct(found_ci, checked).strip()})')
        print(f'  files at 100%             {full} of {len(with_paras)}')
        rep = [(r['file'], len(r['repeated'])) for r in scored if r['repeated']]
        print(f'  paragraphs (>= 20 chars) sovrag repeats more often than the document: '
              f'{sum(n for _, n in rep)} in {len(rep)} files' + ''.join(f'\n    {f}: {n}' for f, n in rep))
        where = collections.Counter()
        for r in scored:
            for m in r['missing']:
                if not m['case_only']:
                    where.update(m['where'] or ['(body)'])
        if where:
            print('  missing paragraphs by where they sit (a paragraph may count under several):')
            for k, v in where.most_common(12):
                print(f'    {k:28} {v}')
        worst = sorted((r for r in with_paras if r['found'] < r['checked']),
                       key=lambda r: (r['found'] / r['checked'], -r['checked']))[:10]
        if worst:
            print('  worst files:')
        for r in worst:
            print(f'    {r["file"]}: {pct(r["found"], r["checked"]).strip()} ({r["found"]}/{r["checked"]}, '
                  f'ignoring case {r["found_ci"]}), sovrag text {r["sovrag_chars"]} chars')
            for m in r['missing'][:3]:
                t = m['text'] if len(m['text']) <= 100 else m['text'][:97] + '...'
                print(f'      - {t!r}  [{", ".join(m["where"]) or "body"}{"; case only" if m["case_only"] else ""}]')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    ap.add_argument('--sovrag', default='/tmp/sovrag-bench-bin')
    ap.add_argument('--folder', default='../shared/bench/docs')
    ap.add_argument('--json', help='write per-file rows (with every missing paragraph) here')
    ap.add_argument('--timeout', type=float, default=120, help='seconds before sovrag is killed')
    ap.add_argument('--formats', default='docx,odt,html,xhtml')
    args = ap.parse_args()
    fmts = [f for f in args.formats.split(',') if f]
    files = []
    for fmt in fmts:
        d = os.path.join(args.folder, fmt)
        if os.path.isdir(d):
            files += [(fmt, os.path.join(d, n)) for n in sorted(os.listdir(d))
                      if n.lower().endswith(FORMATS[fmt])]
    if not files:
        sys.exit(f'no files under {args.folder}/{{{",".join(fmts)}}}')
    data_dir = tempfile.mkdtemp(prefix='sovrag-paragraphs-')
    rows = []
    t0 = time.perf_counter()
    try:
        for i, (fmt, path) in enumerate(files, 1):
            print(f'[{i}/{len(files)}] {fmt} {os.path.basename(path)}', file=sys.stderr, flush=True)
            rows.append(check_file(args.sovrag, data_dir, fmt, os.path.abspath(path), args.timeout))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f'Paragraph coverage of sovrag extract ({args.sovrag}) over {args.folder}: '
          f'{len(files)} files in {time.perf_counter() - t0:.0f} s')
    print('A reference paragraph is found if its normalised text (NFKC, whitespace squashed) is a substring '
          "of sovrag's normalised text.")
    report(rows, fmts)
    checked = sum(r.get('checked', 0) for r in rows)
    found = sum(r.get('found', 0) for r in rows)
    print(f'\nALL: {found}/{checked} paragraphs found ({pct(found, checked).strip()}), '
          f'{sum(r.get("found_ci", 0) for r in rows)} ignoring case')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, ensure_ascii=False, indent=1)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
"""Generator speed: sovrag's llama.cpp path against llama.cpp's own server, side by side.

For each question, `sovrag ask --json --verify off` answers it from the guide (corpus/) in a
fresh process, and reports the prompt tokens it read, the tokens it wrote and the seconds
each took (`timings`). llama.cpp's server (the xllamacpp wheel, same GGUF, same threads, context
4096) is then given a prompt of the same number of tokens (cut from the guide's own text) and
asked for the same number of tokens (greedy, end of text ignored, no prompt cache), so both read
and write the same amounts at the same context length. The two run alternately, question by
question, on one machine. Prints one line per question and the totals with ratios
(sovrag / server; above 1 is faster), and with --json one JSON line on stdout.

Decode rates count forward passes, which is what decoding spends its time on. The server samples
its first token at the end of the prompt and starts its generation clock after it, so its
`predicted_ms` holds `predicted_n - 1` passes; sovrag's `decode_seconds` holds one pass for each
token it generated (each is appended, then the next is picked, up to the end-of-text pick). So
the server is asked for one token more than sovrag generated, and its rate is
`(predicted_n - 1) / predicted_ms`: both then run the same passes over the same context.
(Dividing `predicted_n` by `predicted_ms`, as the server's `predicted_per_second` does, credits
it with a pass it did not time: 1/n more, 2-3% on a short answer.)

sovrag's answers are held to the citation grammar; the server's are not, so its figures include
no grammar time: sovrag's decode is shown with and without its grammar share
(`grammar_seconds`).

Setup:  python3 -m venv /tmp/naiverag && /tmp/naiverag/bin/pip install xllamacpp
Usage:  /tmp/naiverag/bin/python scripts/bench_generate.py --sovrag target/release/sovrag \\
          [--gguf ~/.cache/sovrag/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf] [--threads 2]
"""
import argparse, glob, json, os, shutil, subprocess, sys, tempfile, urllib.request

import xllamacpp

QUESTIONS = [
    "How do I install sovrag on a machine without network access?",
    "Which port does the HTTP API listen on by default?",
    "What happens when a PDF cannot be read?",
    "How does sovrag decide that an answer is not in the documents?",
    "How do I run a replica that follows an index on S3?",
    "What does the verify setting do and what does it cost?",
]

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--sovrag', required=True, help='the sovrag binary')
ap.add_argument('--gguf', default=os.path.expanduser(
    '~/.cache/sovrag/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf'))
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--questions', type=int, default=len(QUESTIONS))
ap.add_argument('--json', action='store_true')
a = ap.parse_args()

data = tempfile.mkdtemp(prefix='sovrag-bench-generate-')
base = [a.sovrag, '--data-dir', data, '--threads', str(a.threads), '--gguf', a.gguf]
subprocess.run(base + ['index', os.path.join(root, 'corpus')], check=True,
               stdout=subprocess.DEVNULL)
guide = '\n\n'.join(open(p).read() for p in sorted(glob.glob(os.path.join(root, 'corpus', '*.md'))))

params = xllamacpp.CommonParams()
params.model.path = a.gguf
params.hostnames = ['127.0.0.1']; params.port = 0
params.n_ctx = 4096; params.n_parallel = 1
params.cpuparams.n_threads = a.threads; params.cpuparams_batch.n_threads = a.threads
params.sampling.temp = 0.0; params.sampling.seed = 42
params.verbosity = 1
server = None


def post(path, body):
    req = urllib.request.Request(server.listening_address + path, json.dumps(body).encode(),
                                 {'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


rows = []
try:
    server = xllamacpp.Server(params)
    guide_tokens = post('/tokenize', {'content': guide})['tokens']
    for q in QUESTIONS[:a.questions]:
        out = subprocess.run(base + ['ask', q, '--json', '--verify', 'off'], check=True,
                             capture_output=True, text=True).stdout
        s = json.loads(out)
        t = s['timings']
        n_prompt, n_gen = t['prompt_tokens_evaluated'], s['generated_tokens']
        if n_gen < 2:
            print(f'skipped (abstained without decoding): {q}', file=sys.stderr)
            continue
        prompt = post('/detokenize', {'tokens': guide_tokens[:n_prompt]})['content']
        r = post('/completion', {'prompt': prompt, 'n_predict': n_gen + 1, 'ignore_eos': True,
                                 'temperature': 0, 'cache_prompt': False})['timings']
        row = {
            'question': q, 'prompt_tokens': n_prompt, 'generated_tokens': n_gen,
            'sovrag_prefill_s': t['prefill_seconds'], 'sovrag_decode_s': t['decode_seconds'],
            'server_prefill_s': r['prompt_ms'] / 1000, 'server_decode_s': r['predicted_ms'] / 1000,
            'sovrag_prefill_tok_s': n_prompt / t['prefill_seconds'],
            'sovrag_decode_tok_s': n_gen / t['decode_seconds'],
            'sovrag_grammar_s': t['grammar_seconds'],
            'sovrag_grammar_share': t['grammar_seconds'] / t['decode_seconds'],
            'server_prompt_tokens': r['prompt_n'], 'server_decode_passes': r['predicted_n'] - 1,
            'server_prefill_tok_s': r['prompt_n'] / (r['prompt_ms'] / 1000),
            'server_decode_tok_s': (r['predicted_n'] - 1) / (r['predicted_ms'] / 1000),
        }
        rows.append(row)
        print(f"{n_prompt:4d} prompt / {n_gen:3d} generated tokens: prefill sovrag "
              f"{row['sovrag_prefill_tok_s']:6.1f} server {row['server_prefill_tok_s']:6.1f} tok/s; "
              f"decode sovrag {row['sovrag_decode_tok_s']:5.1f} server "
              f"{row['server_decode_tok_s']:5.1f} tok/s", file=sys.stderr)
finally:
    del server
    shutil.rmtree(data, ignore_errors=True)

if not rows:
    sys.exit('no question was answered with decoding; nothing to compare')


def total(side, kind):
    # Tokens over seconds across all questions, not a mean of rates.
    tokens = {('sovrag', 'prefill'): 'prompt_tokens', ('sovrag', 'decode'): 'generated_tokens',
              ('server', 'prefill'): 'server_prompt_tokens',
              ('server', 'decode'): 'server_decode_passes'}[side, kind]
    return sum(r[tokens] for r in rows) / sum(r[f'{side}_{kind}_s'] for r in rows)


summary = {
    'model': os.path.basename(a.gguf), 'threads': a.threads, 'questions': len(rows),
    'sovrag_prefill_tok_s': total('sovrag', 'prefill'),
    'server_prefill_tok_s': total('server', 'prefill'),
    'sovrag_decode_tok_s': total('sovrag', 'decode'),
    'server_decode_tok_s': total('server', 'decode'),
}
summary['sovrag_decode_tok_s_without_grammar'] = sum(r['generated_tokens'] for r in rows) / sum(
    r['sovrag_decode_s'] - r['sovrag_grammar_s'] for r in rows)
summary['prefill_ratio'] = summary['sovrag_prefill_tok_s'] / summary['server_prefill_tok_s']
summary['decode_ratio'] = summary['sovrag_decode_tok_s'] / summary['server_decode_tok_s']
summary['decode_ratio_without_grammar'] = (summary['sovrag_decode_tok_s_without_grammar']
                                           / summary['server_decode_tok_s'])
print(f"{summary['model']}, {a.threads} threads, {len(rows)} questions: prefill sovrag "
      f"{summary['sovrag_prefill_tok_s']:.1f} / server {summary['server_prefill_tok_s']:.1f} tok/s "
      f"(x{summary['prefill_ratio']:.2f}); decode sovrag {summary['sovrag_decode_tok_s']:.1f} / "
      f"server {summary['server_decode_tok_s']:.1f} tok/s (x{summary['decode_ratio']:.2f}; "
      f"without sovrag's grammar time {summary['sovrag_decode_tok_s_without_grammar']:.1f} tok/s, "
      f"x{summary['decode_ratio_without_grammar']:.2f})", file=sys.stderr)
if a.json:
    print(json.dumps({'generate': summary, 'rows': rows}))

#!/usr/bin/env python3
"""Naive-RAG baseline for `sovrag eval --qa`, on the open-book SQuAD v2 bench (shared/bench/squad2).

This is the naive baseline the issue describes: a naive RAG pipeline (bm25s + the same MiniLM,
RRF, top-5 paragraphs → llama.cpp's own server with the model's chat template, greedy, one
short-answer prompt), i.e. what a Python user would assemble from well-known parts:
  - retrieval over all corpus paragraphs: bm25s (stemmed, English stop words) and the same int8
    all-MiniLM-L6-v2 through onnxruntime (mean pooling, normalised; as shared/bench/pyref.py),
    each top 100, fused by reciprocal rank (k=60); the top --passages paragraphs are the context;
  - generation: llama.cpp's server from the xllamacpp wheel, on 127.0.0.1, --threads threads,
    context 4096, OpenAI /v1/chat/completions (the GGUF's chat template), temperature 0, fixed
    seed, max 48 tokens; a reply of "unanswerable" (or nothing) counts as an abstention ("").
Scored by the official evaluate-v2.0.py on the questions asked. Prints one JSON line
{"naive": {...}} on stdout (fields as in `sovrag eval --qa --json`) and a summary on stderr.

Setup:  python3 -m venv /tmp/naiverag && /tmp/naiverag/bin/pip install xllamacpp bm25s PyStemmer onnxruntime tokenizers numpy
Usage:  /tmp/naiverag/bin/python scripts/bench_naive_rag.py --bench ../shared/bench/squad2 \\
          --gguf ~/.cache/sovrag/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \\
          [--threads 2] [--limit N] [--passages 5] [--predictions-out FILE] [--port P] [--models DIR]
--limit N asks the first N/2 answerable and N - N/2 unanswerable questions in file order (as sovrag)."""
import argparse, json, os, re, string, subprocess, sys, tempfile, time, urllib.request

import bm25s, numpy as np, onnxruntime as ort, Stemmer, xllamacpp
from tokenizers import Tokenizer

SYSTEM = ("Answer the question using only the passages. Reply with the shortest answer phrase copied "
          "from a passage, or 'unanswerable' if the passages do not contain the answer.")

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--bench', required=True, help='folder with corpus.jsonl, questions.jsonl, gold.json, evaluate-v2.0.py')
ap.add_argument('--gguf', required=True, help='generator model (GGUF)')
ap.add_argument('--models', default=os.path.expanduser('~/.cache/sovrag/models'), help='holds minilm/model.onnx and minilm/tokenizer.json')
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--limit', type=int, default=0, help='N questions, half answerable (0 = all)')
ap.add_argument('--passages', type=int, default=5)
ap.add_argument('--predictions-out')
ap.add_argument('--port', type=int, default=0, help='llama.cpp server port (0 = any free one)')
ap.add_argument('--max-tokens', type=int, default=48)
a = ap.parse_args()

def jsonl(path):
    return [json.loads(line) for line in open(path) if line.strip()]

corpus = jsonl(os.path.join(a.bench, 'corpus.jsonl'))
questions = jsonl(os.path.join(a.bench, 'questions.jsonl'))
if a.limit:  # balanced, in file order: same rule as sovrag's --limit
    left = {False: a.limit // 2, True: a.limit - a.limit // 2}
    picked = []
    for q in questions:
        if left[q['is_impossible']] > 0:
            left[q['is_impossible']] -= 1; picked.append(q)
    questions = picked

# Retrieval: bm25s + MiniLM (ONNX) + RRF, as shared/bench/pyref.py.
ids = [d['_id'] for d in corpus]
texts = [(d.get('title', '').replace('_', ' ') + ' ' + d['text']).strip() for d in corpus]
stem = Stemmer.Stemmer('english')
bm = bm25s.BM25(k1=1.2, b=0.75)
bm.index(bm25s.tokenize(texts, stopwords='en', stemmer=stem, show_progress=False), show_progress=False)
tok = Tokenizer.from_file(os.path.join(a.models, 'minilm', 'tokenizer.json'))
tok.enable_truncation(256); tok.enable_padding()
so = ort.SessionOptions(); so.intra_op_num_threads = a.threads; so.inter_op_num_threads = 1
onnx = ort.InferenceSession(os.path.join(a.models, 'minilm', 'model.onnx'), so)

def embed(batch):
    enc = tok.encode_batch(batch)
    ii = np.array([e.ids for e in enc], dtype=np.int64); am = np.array([e.attention_mask for e in enc], dtype=np.int64)
    out = onnx.run(None, {'input_ids': ii, 'attention_mask': am, 'token_type_ids': np.zeros_like(ii)})[0]
    m = am[..., None].astype(np.float32); v = (out * m).sum(1) / m.sum(1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)

t0 = time.time()
order = np.argsort([len(x) for x in texts]); E = np.zeros((len(texts), 384), np.float32)
for i in range(0, len(texts), 32):
    idx = order[i:i + 32]; E[idx] = embed([texts[j] for j in idx])
print(f'naive: indexed {len(texts)} paragraphs (bm25s + MiniLM) in {time.time() - t0:.1f}s', file=sys.stderr)

def retrieve(query, k, depth=100):
    res, _ = bm.retrieve(bm25s.tokenize([query], stopwords='en', stemmer=stem, show_progress=False),
                         k=min(depth, len(ids)), show_progress=False)
    dense = np.argsort(-(E @ embed([query])[0]))[:depth]
    score = {}
    for ranking in (res[0], dense):
        for rank, j in enumerate(ranking):
            score[int(j)] = score.get(int(j), 0) + 1 / (60 + rank + 1)
    return sorted(score, key=lambda j: -score[j])[:k]

# Generation: llama.cpp's own server, embedded by xllamacpp (it listens as soon as Server() returns).
params = xllamacpp.CommonParams()
params.model.path = os.path.expanduser(a.gguf)
params.hostnames = ['127.0.0.1']; params.port = a.port
params.n_ctx = 4096; params.n_parallel = 1
params.cpuparams.n_threads = a.threads; params.cpuparams_batch.n_threads = a.threads
params.sampling.temp = 0.0; params.sampling.seed = 42
params.verbosity = 1  # quiet llama.cpp's log (its default, 3, prints ~8 lines per request)
server = None

def chat(question, passages):
    user = 'Passages:\n' + '\n\n'.join(f'[{i}] {p}' for i, p in enumerate(passages, 1)) + f'\n\nQuestion: {question}'
    body = {'messages': [{'role': 'system', 'content': SYSTEM}, {'role': 'user', 'content': user}],
            'temperature': 0, 'seed': 42, 'max_tokens': a.max_tokens, 'stream': False}
    req = urllib.request.Request(server.listening_address + '/v1/chat/completions', json.dumps(body).encode(),
                                 {'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.load(r)
    return out['choices'][0]['message']['content'] or '', out['timings']

def abstains(reply):
    return reply.lower().translate(str.maketrans('', '', string.punctuation)).strip() in ('', 'unanswerable')

preds, times = {}, []
prefill_n = prefill_ms = decode_n = decode_ms = 0
has_total = gold_retrieved = 0
try:
    server = xllamacpp.Server(params)
    for i, q in enumerate(questions):
        started = time.perf_counter()
        top = retrieve(q['question'], a.passages)
        reply, t = chat(q['question'], [texts[j] for j in top])
        times.append(time.perf_counter() - started)
        prefill_n += t['prompt_n']; prefill_ms += t['prompt_ms']
        decode_n += t['predicted_n']; decode_ms += t['predicted_ms']
        if not q['is_impossible']:
            has_total += 1; gold_retrieved += q['doc_id'] in {ids[j] for j in top}
        preds[q['id']] = '' if abstains(reply) else reply.strip()
        print(f"naive: {i + 1}/{len(questions)} {times[-1]:.1f}s {q['id']} -> {preds[q['id']]!r}", file=sys.stderr)
finally:
    del server  # stops llama.cpp's server threads (also on error / Ctrl-C)

if a.predictions_out:
    json.dump(preds, open(a.predictions_out, 'w'), indent=1)

# Official scorer, on a gold file cut down to the questions asked (it needs a prediction for each).
with tempfile.TemporaryDirectory(prefix='naive-rag-') as tmp:
    gold = json.load(open(os.path.join(a.bench, 'gold.json')))
    for art in gold['data']:
        for p in art['paragraphs']:
            p['qas'] = [qa for qa in p['qas'] if qa['id'] in preds]
    json.dump(gold, open(os.path.join(tmp, 'gold.json'), 'w'))
    json.dump(preds, open(os.path.join(tmp, 'preds.json'), 'w'))
    # (the scorer imports numpy, for plots only; this interpreter has it, retrieval needs it)
    s = json.loads(subprocess.run([sys.executable, os.path.join(a.bench, 'evaluate-v2.0.py'), os.path.join(tmp, 'gold.json'),
                                   os.path.join(tmp, 'preds.json')], check=True, capture_output=True, text=True).stdout)

times.sort()
at = lambda f: times[round((len(times) - 1) * f)] if times else 0.0  # same percentile rule as sovrag
r = {'questions': len(questions), 'exact': s['exact'], 'f1': s['f1'],
     'HasAns_exact': s.get('HasAns_exact'), 'HasAns_f1': s.get('HasAns_f1'), 'NoAns_exact': s.get('NoAns_exact'),
     'gold_retrieved': 100.0 * gold_retrieved / has_total if has_total else 0.0,
     'seconds_p50': at(0.5), 'seconds_p99': at(0.99),
     'prefill_tok_s': 1000.0 * prefill_n / max(prefill_ms, 1e-9), 'decode_tok_s': 1000.0 * decode_n / max(decode_ms, 1e-9),
     'model': os.path.basename(a.gguf), 'threads': a.threads, 'passages': a.passages}
print(json.dumps({'naive': r}))
fmt = lambda v: 'n/a' if v is None else f'{v:.1f}'
print(f"naive RAG: {r['questions']} questions, {r['model']}, {a.passages} passages, {a.threads} threads: "
      f"exact {fmt(r['exact'])} f1 {fmt(r['f1'])} (HasAns {fmt(r['HasAns_exact'])}/{fmt(r['HasAns_f1'])}, "
      f"NoAns {fmt(r['NoAns_exact'])}); gold retrieved {fmt(r['gold_retrieved'])}%; "
      f"p50 {r['seconds_p50']:.2f}s p99 {r['seconds_p99']:.2f}s; prefill {r['prefill_tok_s']:.0f} tok/s, "
      f"decode {r['decode_tok_s']:.1f} tok/s", file=sys.stderr)

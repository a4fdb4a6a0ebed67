#!/usr/bin/env python3
"""The HTTP endpoint under load, against a running `sovrag serve` (loopback only).

1. Streamed answers: --asks streamed `POST /v1/chat/completions`, one at a time, questions
   taken in turn from --questions (default: questions about the built-in guide, for a server
   that indexed corpus/). For each: seconds to the first byte of the event stream (the role
   chunk with the sources: retrieval done) and to the first content token, and the total.
   Prints p50 and p99 of each.
2. Search throughput: `POST /v1/query` (k=10) at concurrency 1, 4 and 16, each for
   --seconds: requests/s, p50 and p99 latency, errors. Searches never wait for answers, so
   this runs with no answer in flight.

Needs only Python 3. Run (from the repository root):
  sovrag --data-dir /tmp/bench-http index corpus
  sovrag --data-dir /tmp/bench-http serve &
  python3 scripts/bench_http.py [--base http://127.0.0.1:7878] [--asks 50] [--seconds 10]"""
import argparse, http.client, json, statistics, threading, time, urllib.parse

QUESTIONS = [
    "How do I watch another folder?",
    "Which port does the HTTP API listen on?",
    "How do I index a folder of PDFs?",
    "What does the abstain threshold do?",
    "How are documents split into passages?",
    "Where does sovrag keep its index?",
    "How do I require an API key?",
    "What happens to a file that cannot be read?",
    "How do I use a different GGUF model?",
    "How does verification check an answer?",
]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float('nan')


def conn(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)


def streamed_ask(base, question):
    c = conn(base)
    body = json.dumps({"messages": [{"role": "user", "content": question}], "stream": True})
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read()[:300])
    first_byte = first_token = None
    buf = b''
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        if first_byte is None:
            first_byte = time.perf_counter() - t0
        buf += chunk
        while b'\n\n' in buf:
            event, buf = buf.split(b'\n\n', 1)
            if not event.startswith(b'data: {'):
                continue
            v = json.loads(event[6:])
            ch = v.get('choices') or [{}]
            if first_token is None and ch[0].get('delta', {}).get('content'):
                first_token = time.perf_counter() - t0
    c.close()
    return first_byte, first_token, time.perf_counter() - t0


def search_load(base, concurrency, seconds, queries):
    lat, errors = [], [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(i):
        c = conn(base)
        n = i
        while time.perf_counter() < stop:
            q = queries[n % len(queries)]
            n += concurrency
            t = time.perf_counter()
            try:
                c.request("POST", "/v1/query", json.dumps({"query": q, "k": 10}),
                          {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                ok = False
                c = conn(base)
            with lock:
                if ok:
                    lat.append(time.perf_counter() - t)
                else:
                    errors[0] += 1
        c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return len(lat) / wall, pct(lat, 50), pct(lat, 99), errors[0], len(lat)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--base', default='http://127.0.0.1:7878')
    ap.add_argument('--asks', type=int, default=50)
    ap.add_argument('--seconds', type=float, default=10)
    ap.add_argument('--questions', help='a file with one question a line (default: about the guide)')
    a = ap.parse_args()
    questions = QUESTIONS
    if a.questions:
        questions = [l.strip() for l in open(a.questions) if l.strip()]

    if a.asks:
        fb, ft, total = [], [], []
        for i in range(a.asks):
            b, t, w = streamed_ask(a.base, questions[i % len(questions)])
            fb.append(b)
            total.append(w)
            if t is not None:
                ft.append(t)
            print(f"  ask {i + 1}/{a.asks}: first byte {b:.3f} s, first content {t if t is None else round(t, 2)} s, total {w:.1f} s", flush=True)
        print(f"\nStreamed answers ({a.asks}, one at a time):")
        print(f"  first SSE byte      p50 {pct(fb, 50):.3f} s   p99 {pct(fb, 99):.3f} s")
        print(f"  first content token p50 {pct(ft, 50):.2f} s   p99 {pct(ft, 99):.2f} s   ({len(ft)} answers had content)")
        print(f"  whole answer        p50 {pct(total, 50):.1f} s   p99 {pct(total, 99):.1f} s")

    if a.seconds:
        print(f"\nPOST /v1/query, k=10, {a.seconds:.0f} s each:")
        print("  concurrency  requests/s     p50 ms     p99 ms  errors")
        for c in (1, 4, 16):
            rps, p50, p99, err, n = search_load(a.base, c, a.seconds, questions)
            print(f"  {c:>11}  {rps:>10.1f}  {p50 * 1000:>9.1f}  {p99 * 1000:>9.1f}  {err:>6}")


if __name__ == '__main__':
    main()

"""Real clients against a running sovrag server, each step bounded and on loopback only.

Run by the integration test `clients::real_clients_work` (tests/integration/clients.py),
with the venv that scripts/clients_venv.sh makes (openai, llm, schemathesis, selenium) and
Debian's nginx, chromium and chromium-driver.

    python clients.py BASE_URL API_KEY MODEL_ID ARTEFACTS_DIR [STEP ...]

Steps: openai llm schemathesis nginx browser (all by default). Prints one line per check;
exits non-zero on the first failure. schemathesis runs against SOVRAG_SCHEMATHESIS_BASE when
set (a server with short answers: it sends hundreds of requests), else BASE_URL.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BASE, KEY, MODEL, ARTEFACTS = sys.argv[1:5]
STEPS = sys.argv[5:] or ["openai", "llm", "schemathesis", "nginx", "browser"]
HERE = os.path.dirname(os.path.abspath(__file__))
QUESTION = "When does the barn owl hunt?"


def ok(what):
    print(f"ok: {what}", flush=True)


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    ok(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_openai():
    from openai import APIError, AuthenticationError, OpenAI
    from pydantic import BaseModel

    client = OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0, timeout=300)
    whole = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}]
    )
    msg = whole.choices[0].message
    check(msg.role == "assistant" and msg.content, f"chat completion: {msg.content!r}")
    check(whole.usage.prompt_tokens > 0, "usage is counted")
    for a in msg.annotations or []:
        check(
            a.type == "url_citation" and a.url_citation.url.startswith("/v1/documents/"),
            f"annotation {a.url_citation.url}",
        )

    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # (Not compared with the whole answer: greedy decoding of a tiny model can part ways
    # between two requests, as llama.cpp's sums differ with how the prompt was batched.)
    check(len(chunks) > 3 and text.strip(), f"streamed in {len(chunks)} chunks: {text[:60]!r}")
    check(chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0, "usage chunk last")

    # `stop`: the answer ends before the stop sequence (and keeps only the sentences
    # finished, with their citations, before it).
    cut = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], stop=["xyzzy", "fields"]
    )
    c = cut.choices[0]
    check("fields" in msg.content and "fields" not in c.message.content
          and c.finish_reason == "stop", f"stop=['fields']: {c.message.content!r}")

    ids = [m.id for m in client.models.list()]
    check(MODEL in ids, f"models.list() names {MODEL}")

    # The SDK asks for base64 unless told otherwise, and decodes it.
    emb = client.embeddings.create(model="all-MiniLM-L6-v2", input=["barn owl", "kettle"])
    vec = emb.data[0].embedding
    check(
        len(emb.data) == 2 and len(vec) == 384 and abs(math.hypot(*vec) - 1) < 1e-3,
        "embeddings: two unit vectors of 384 (base64 on the wire)",
    )

    class Owl(BaseModel):
        when: str

    parsed = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        response_format=Owl,
    )
    owl = parsed.choices[0].message.parsed
    check(isinstance(owl, Owl), f"parse() with a pydantic schema: {owl!r}")

    try:
        OpenAI(base_url=f"{BASE}/v1", api_key="wrong", max_retries=0).models.list()
        check(False, "a wrong key is refused")
    except AuthenticationError:
        ok("a wrong key raises AuthenticationError")

    # A JSON answer that cannot finish in 3 tokens fails after the stream began: an error
    # event, which the SDK raises.
    try:
        for _ in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            max_tokens=3,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "owl", "schema": Owl.model_json_schema()},
            },
        ):
            pass
        check(False, "an error mid-stream is raised")
    except APIError as e:
        ok(f"an error mid-stream raises APIError: {e.message[:80]}")


def step_llm():
    home = tempfile.mkdtemp(prefix="llm-")
    with open(os.path.join(home, "extra-openai-models.yaml"), "w") as f:
        f.write(
            f"- model_id: sovrag\n  model_name: {MODEL}\n  api_base: {BASE}/v1\n"
            f"  api_key_name: sovrag\n  supports_schema: true\n"
        )
    env = dict(os.environ, LLM_USER_PATH=home)
    llm = os.path.join(os.path.dirname(sys.executable), "llm")
    run = lambda *a: subprocess.run(  # noqa: E731
        [llm, *a], env=env, capture_output=True, text=True, timeout=300
    )
    r = run("keys", "set", "sovrag", "--value", KEY)
    check(r.returncode == 0, f"llm keys set: {r.stderr.strip()}")
    streamed = run("-m", "sovrag", QUESTION)
    check(streamed.returncode == 0 and streamed.stdout.strip(), f"llm (streamed): {streamed.stdout.strip()!r} {streamed.stderr.strip()}")
    whole = run("-m", "sovrag", "--no-stream", QUESTION)
    check(whole.returncode == 0 and whole.stdout.strip(), f"llm --no-stream: {whole.stdout.strip()!r}")
    schema = run("-m", "sovrag", "--schema", "when str", QUESTION)
    check(schema.returncode == 0, f"llm --schema: {schema.stderr.strip()}")
    check(isinstance(json.loads(schema.stdout).get("when"), str), f"llm --schema JSON: {schema.stdout.strip()}")
    shutil.rmtree(home, ignore_errors=True)


def get(path, key=KEY):
    req = urllib.request.Request(f"{BASE}{path}")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def step_schemathesis():
    base = os.environ.get("SOVRAG_SCHEMATHESIS_BASE", BASE)
    status, body = get("/openapi.json")
    check(status == 200, "GET /openapi.json")
    doc = json.loads(body)
    check(doc["openapi"].startswith("3.1"), f"OpenAPI {doc['openapi']}")
    path = os.path.join(ARTEFACTS, "openapi.json")
    with open(path, "wb") as f:
        f.write(body)
    # Without a key every operation but the public ones is refused.
    for p, item in doc["paths"].items():
        for method, op in item.items():
            if method != "get" or op.get("security") == []:
                continue
            status, _ = get(p.replace("{doc_id}", "0").replace("{id}", "0"), key=None)
            check(status == 401, f"GET {p} without a key: {status}")
    st = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    r = subprocess.run(
        [st, "--config-file", os.path.join(HERE, "schemathesis.toml"), "run", path,
         "--url", base, "-H", f"Authorization: Bearer {KEY}",
         "--phases", "examples,coverage,fuzzing"],
        capture_output=True, text=True, timeout=420, cwd=ARTEFACTS,
    )
    with open(os.path.join(ARTEFACTS, "schemathesis.txt"), "w") as f:
        f.write(r.stdout + r.stderr)
    summary = [l for l in r.stdout.splitlines() if "generated" in l or "passed" in l or "failures" in l]
    check(r.returncode == 0, f"schemathesis: {' | '.join(summary[-2:])}")


def stream_times(base):
    """POSTs a streamed chat to `base`; the seconds at which each content delta arrived,
    and at which [DONE] did."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    body = json.dumps({
        "model": MODEL, "stream": True, "verify": False, "max_tokens": 60,
        "messages": [{"role": "user", "content": "Tell me everything about barn owls."}],
    })
    started = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body,
                 {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    content, done = [], None
    while True:
        line = resp.fp.readline()
        if not line:
            break
        line = line.decode().strip()
        if line == "data: [DONE]":
            done = time.monotonic() - started
            break
        if line.startswith("data: "):
            chunk = json.loads(line[6:])
            for c in chunk.get("choices", []):
                if c["delta"].get("content"):
                    content.append(time.monotonic() - started)
    conn.close()
    return content, done


def step_nginx():
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    prefix = tempfile.mkdtemp(prefix="nginx-")
    for d in ("logs", "tmp"):
        os.makedirs(os.path.join(prefix, d))
    # Default proxy settings: proxy_buffering is on. The server's X-Accel-Buffering: no turns
    # it off for the stream.
    conf = f"""
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp; uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass {BASE}; proxy_http_version 1.1; }}
  }}
}}
"""
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(conf)
    proc = subprocess.Popen([nginx, "-p", prefix, "-c", os.path.join(prefix, "nginx.conf"),
                             "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        content, done = stream_times(f"http://127.0.0.1:{port}")
        check(done is not None and len(content) >= 3, f"streamed through nginx: {len(content)} content chunks")
        check(done - content[0] >= 0.2,
              f"through nginx, the first content came {done - content[0]:.2f} s before the end "
              f"(at {content[0]:.2f} s of {done:.2f} s)")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


def step_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--window-size=1000,900",
              f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        opts.add_argument(a)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"{BASE}/")
        driver.execute_script("localStorage.setItem('sovrag-key', arguments[0])", KEY)
        driver.get(f"{BASE}/")
        q = driver.find_element(By.ID, "question")
        q.send_keys(QUESTION)
        driver.find_element(By.CSS_SELECTOR, "#ask-form button, #ask-form [type=submit]").click()
        lengths, deadline = [], time.monotonic() + 240
        while time.monotonic() < deadline:
            n = len(driver.find_element(By.ID, "answer").text)
            if not lengths or n != lengths[-1]:
                lengths.append(n)
            # Done: the feedback box follows a finished answer; an error shows instead.
            if driver.find_elements(By.CSS_SELECTOR, "#out .fb, #cites .err"):
                break
            time.sleep(0.05)
        grew = [n for n in lengths if n > 0]
        # (The last length can be shorter: the kept answer replaces the draft at the end.)
        check(len(grew) >= 3 and grew[0] < grew[1] < grew[2],
              f"the answer grew as it streamed: lengths {grew[:8]}")
        driver.save_screenshot(os.path.join(ARTEFACTS, "page-answer.png"))
        shown = driver.find_element(By.ID, "answer").text
        answer_id = driver.find_element(By.CSS_SELECTOR, "#out .fb").get_attribute("data-id")
        status, body = get(f"/v1/answers/{answer_id}")
        kept = json.loads(body)["answer"]
        check(status == 200 and shown == kept, f"the page shows the answer as kept: {shown!r}")
        chips = driver.find_elements(By.CSS_SELECTOR, "#cites a.chip")
        check(chips, f"citation chips: {[c.text for c in chips]}")
        chip = chips[0]
        chip.click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not driver.find_elements(By.CSS_SELECTOR, ".doc .hl"):
            time.sleep(0.05)
        marked = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".doc .hl"))
        check("dusk" in marked, f"the citation opened its passage, marked: {marked!r}")
        driver.save_screenshot(os.path.join(ARTEFACTS, "page-citation.png"))
    finally:
        driver.quit()


os.makedirs(ARTEFACTS, exist_ok=True)
for s in STEPS:
    print(f"== {s}", flush=True)
    globals()[f"step_{s}"]()
print("all client checks passed")

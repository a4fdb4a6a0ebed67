#!/usr/bin/env python3
"""The official `openai` Python client against a running `sovrag serve`: models.list, chat
whole and streamed (the client's stream helper, and a raw stream with usage), `.parse` with a
pydantic schema (json_schema response_format), embeddings (the client asks for base64 by
default), and a 404 and a 401 raised as the client's own exceptions. Prints what it got;
exits non-zero on the first failure.

Needs a venv with the client: python3 -m venv /tmp/oai && /tmp/oai/bin/pip install openai
Run (from the repository root, against a server over an index of corpus/):
  sovrag --data-dir /tmp/oai-data index corpus
  sovrag --data-dir /tmp/oai-data --api-key KEY serve &
  /tmp/oai/bin/python scripts/check_openai_client.py http://127.0.0.1:7878 KEY"""
import sys, openai
from pydantic import BaseModel
base, key = sys.argv[1], sys.argv[2]
c = openai.OpenAI(base_url=base + "/v1", api_key=key)
models = c.models.list()
assert models.data, "no models"
print("models:", [m.id for m in models.data])
r = c.chat.completions.create(model=models.data[0].id, messages=[{"role": "user", "content": "Which port does the HTTP API listen on?"}])
assert r.choices[0].message.annotations, "no url_citation annotations"
print("chat:", r.choices[0].message.content, "| annotations:", len(r.choices[0].message.annotations or []), "| usage:", r.usage.total_tokens)
text = ""
with c.chat.completions.stream(model=models.data[0].id, messages=[{"role": "user", "content": "How do I watch another folder?"}]) as s:
    for ev in s:
        if ev.type == "content.delta":
            text += ev.delta
print("stream:", text)
st = c.chat.completions.create(model=models.data[0].id, stream=True, stream_options={"include_usage": True}, messages=[{"role": "user", "content": "What is sovrag?"}])
chunks = list(st)
print("raw stream chunks:", len(chunks), "usage:", chunks[-1].usage)
class Port(BaseModel):
    port: int
p = c.chat.completions.parse(model=models.data[0].id, messages=[{"role": "user", "content": "Which port does the HTTP API listen on by default?"}], response_format=Port)
assert isinstance(p.choices[0].message.parsed, Port)
print("parse:", p.choices[0].message.parsed)
e = c.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
print("embeddings:", len(e.data), len(e.data[0].embedding), round(sum(x*x for x in e.data[0].embedding), 4))
try:
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    sys.exit("an unknown model was accepted")
except openai.NotFoundError as err:
    print("404 ->", type(err).__name__, err.code)
try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong").models.list()
    sys.exit("a wrong key was accepted")
except openai.AuthenticationError as err:
    print("401 ->", type(err).__name__)
print("ok")

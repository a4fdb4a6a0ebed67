//! Where the model files live, and a clear error when they do not.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The command that fetches the models; quoted in every "missing model" error.
pub const SETUP_COMMAND: &str = "python3 scripts/fetch_models.py";

/// The default generator's file name in the cache.
pub const DEFAULT_GGUF: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

/// The sha256 of every file `scripts/fetch_models.py` puts in the cache, by path relative
/// to the cache: the same file the script checks its downloads against.
const PINS: &str = include_str!("../model-pins.json");

/// The files the cache may hold and their pinned sha256: `(relative path, hex digest)`.
pub fn pins() -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(PINS).expect("model-pins.json is JSON");
    v["files"]
        .as_object()
        .expect("model-pins.json has files")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// The files search needs (relative to the cache); the generators are needed only to answer.
pub const REQUIRED: [&str; 3] = [
    "minilm/model.onnx",
    "minilm/tokenizer.json",
    "onnxruntime/libonnxruntime.so",
];

/// Paths of the files sovrag loads from the model cache.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    /// The cache folder itself.
    pub dir: PathBuf,
    /// int8 all-MiniLM-L6-v2 ONNX graph.
    pub embed_onnx: PathBuf,
    /// Folder with tokenizer.json, config.json, special_tokens_map.json, tokenizer_config.json.
    pub tokenizer_dir: PathBuf,
    /// libonnxruntime shared library (overridden by `ORT_DYLIB_PATH`).
    pub onnxruntime: PathBuf,
    /// The default generator (Qwen2.5-Coder-1.5B-Instruct Q4_K_M).
    pub gguf: PathBuf,
}

impl ModelPaths {
    /// The default cache: `$SOVRAG_MODELS`, else `<user cache dir>/sovrag/models`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("SOVRAG_MODELS").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("sovrag").join("models")
    }

    /// Locates the files in `dir` (or the default cache) and checks the embedding model is there.
    /// The generator is checked only when it is loaded, so search works without it.
    pub fn locate(dir: Option<&Path>) -> Result<Self> {
        let dir = dir.map(Path::to_path_buf).unwrap_or_else(Self::default_dir);
        let onnxruntime = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("onnxruntime").join("libonnxruntime.so"));
        let paths = ModelPaths {
            embed_onnx: dir.join("minilm").join("model.onnx"),
            tokenizer_dir: dir.join("minilm"),
            gguf: dir.join(DEFAULT_GGUF),
            onnxruntime,
            dir,
        };
        let needed = [
            paths.embed_onnx.clone(),
            paths.tokenizer_dir.join("tokenizer.json"),
            paths.onnxruntime.clone(),
        ];
        let missing: Vec<String> = needed
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Models(format!(
                "models not found: {} missing. Run `{SETUP_COMMAND}` once (it fetches them into {}; \
                 set SOVRAG_MODELS or --models to use another folder).",
                missing.join(", "),
                paths.dir.display()
            )));
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_required_file_and_the_default_generator_are_pinned() {
        let pins = super::pins();
        for f in super::REQUIRED.iter().chain([&super::DEFAULT_GGUF]) {
            let pin = pins.iter().find(|(p, _)| p == f);
            assert!(pin.is_some_and(|(_, h)| h.len() == 64), "{f}");
        }
    }
}

//! sovrag's end-to-end test suite lives in `integration/` (one test binary, like ripgrep's):
//! it drives the real `sovrag` binary with the real models, real LanceDB and tantivy files
//! in temporary folders, and real HTTP on loopback. Run it with `cargo test --release`.

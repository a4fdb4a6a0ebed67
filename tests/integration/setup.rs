//! `scripts/setup.sh --check`: its detection rules, on a machine made to lack things.
//!
//! CI runs on a machine where everything is installed, so a wrong rule (a glob that took
//! `libclang-cpp` for the `libclang` bindgen loads) passes there and fails a newcomer an
//! hour into the build. These tests give the script a PATH without the tools and a fake
//! `dpkg-query`, and check what it reports.

use std::collections::BTreeSet;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

use crate::util::{repo, run_ok};

/// Tools the fake machine lacks, besides `dpkg-query`, which is replaced.
const REMOVED: &[&str] = &[
    "protoc",
    "cmake",
    "c++",
    "g++",
    "llvm-config",
    "unshare",
    "ip",
    "dpkg-query",
];

/// A folder of links to every program in /usr/bin and /bin except [`REMOVED`] (and any
/// `llvm-config-N`), plus `dpkg-query` as `dpkg` (a script) when given.
fn fake_path(dir: &Path, dpkg: Option<&str>) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for sys in ["/usr/bin", "/bin"] {
        let Ok(entries) = std::fs::read_dir(sys) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if REMOVED.contains(&name.as_str()) || name.starts_with("llvm-config") {
                continue;
            }
            let _ = symlink(e.path(), bin.join(&name));
        }
    }
    if let Some(script) = dpkg {
        let p = bin.join("dpkg-query");
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin.display().to_string()
}

fn check(path: &str, libclang_path: Option<&Path>) -> Output {
    let mut c = Command::new("/bin/bash");
    c.arg(repo().join("scripts/setup.sh"))
        .arg("--check")
        .env("PATH", path)
        .env_remove("LIBCLANG_PATH");
    if let Some(p) = libclang_path {
        c.env("LIBCLANG_PATH", p);
    }
    c.output().expect("run setup.sh --check")
}

fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"))
}

#[test]
fn setup_check_reports_what_a_fresh_machine_lacks() {
    let dir = tempfile::tempdir().unwrap();
    // dpkg-query as Debian's answers for a package that is not installed.
    let absent = "echo \"dpkg-query: no packages found matching $3\" >&2; exit 1";
    let path = fake_path(dir.path(), Some(absent));

    // Only libclang-cpp where bindgen would look: not the library it loads.
    let cpp_only = dir.path().join("llvm-cpp-only");
    std::fs::create_dir_all(&cpp_only).unwrap();
    std::fs::write(cpp_only.join("libclang-cpp.so.14"), b"").unwrap();
    let out = check(&path, Some(&cpp_only));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for (name, pkg) in [
        ("protoc", "protobuf-compiler"),
        ("cmake", "cmake"),
        ("c++", "g++"),
        ("libclang", "libclang-dev"),
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
    ] {
        let l = line(&stdout, name);
        assert!(l.trim_start().starts_with("missing"), "{l}");
        assert!(l.contains(&format!("apt-get install -y {pkg}")), "{l}");
    }
    assert!(stdout.contains("something is missing"), "{stdout}");

    // Without LIBCLANG_PATH, Debian's package decides: whatever libclang* files this
    // machine holds (CI's has libclang-cpp and libclang), libclang-dev absent is missing.
    let out = check(&path, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        line(&stdout, "libclang")
            .trim_start()
            .starts_with("missing"),
        "{stdout}"
    );

    // The library bindgen does load, named through LIBCLANG_PATH, is found.
    let real = dir.path().join("llvm");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("libclang-cpp.so.14"), b"").unwrap();
    std::fs::write(real.join("libclang.so.1"), b"").unwrap();
    let out = check(&path, Some(&real));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let l = line(&stdout, "libclang");
    assert!(l.trim_start().starts_with("found"), "{stdout}");
    assert!(l.contains("libclang.so.1"), "{l}");
}

#[test]
fn setup_check_trusts_installed_packages() {
    let dir = tempfile::tempdir().unwrap();
    let installed = "printf 'install ok installed'";
    let path = fake_path(dir.path(), Some(installed));
    let out = check(&path, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in [
        "protoc", "cmake", "c++", "libclang", "python3", "pip", "unshare", "ip",
    ] {
        let l = line(&stdout, name);
        assert!(l.trim_start().starts_with("found"), "{stdout}");
        assert!(l.contains("package "), "{l}");
    }
}

#[test]
fn setup_check_passes_on_this_machine() {
    // The suite runs after `setup.sh --tests`, so everything the build and the tests need
    // is here.
    let out = Command::new("/bin/bash")
        .arg(repo().join("scripts/setup.sh"))
        .args(["--check", "--tests"])
        .output()
        .expect("run setup.sh --check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("all found"), "{stdout}");
}

/// The GGUF file names written in the Rust sources under `dir`, recursively; this file is
/// left out, so the names it checks for come from the code that loads them.
fn gguf_names(dir: &Path, names: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            gguf_names(&path, names);
        } else if path.extension().is_some_and(|x| x == "rs") && !path.ends_with(file!()) {
            let text = std::fs::read_to_string(&path).unwrap();
            for (end, _) in text.match_indices(".gguf\"") {
                let start = text[..end].rfind('"').map_or(0, |q| q + 1);
                let name = &text[start..end + ".gguf".len()];
                // A literal file name: not an extension alone, a path or a format string.
                if name.len() > ".gguf".len() && !name.contains(['/', '{', ' ']) {
                    names.insert(name.to_owned());
                }
            }
        }
    }
}

#[test]
fn test_setup_fetches_every_model_the_tests_load() {
    // A fresh machine once built for an hour, then failed four generator tests: they loaded
    // the 0.5B, which only an older model cache held, and set-up did not fetch it.
    let mut named = BTreeSet::new();
    for crate_dir in ["generate", "ingest", "retrieve", "server", "tests"] {
        gguf_names(&repo().join(crate_dir), &mut named);
    }
    assert!(
        named.contains("smollm2-135m-instruct-q4_1.gguf"),
        "the scan found no model names: {named:?}"
    );
    let out = run_ok(
        Command::new("python3")
            .arg(repo().join("scripts/fetch_models.py"))
            .args(["--tests", "--list"]),
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    let listed: BTreeSet<&str> = listed.lines().collect();
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| !listed.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the sources load {missing:?}, which `setup.sh --tests` does not fetch (add it to TEST_GENERATORS in scripts/fetch_models.py)"
    );
}

/// `scripts/clients_venv.sh --check` with `PATH` (and its exit code and output).
fn clients_check(path: Option<&str>) -> Output {
    let mut c = Command::new("/bin/bash");
    c.arg(repo().join("scripts/clients_venv.sh")).arg("--check");
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().expect("run clients_venv.sh --check")
}

#[test]
fn clients_check_reports_what_a_fresh_machine_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let absent = "echo \"dpkg-query: no packages found matching $3\" >&2; exit 1";
    let path = fake_path(dir.path(), Some(absent));
    // Debian's python3 without python3-venv: no ensurepip.
    let python = Path::new(&path).join("python3");
    let _ = std::fs::remove_file(&python);
    std::fs::write(&python, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = clients_check(Some(&path));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for (name, pkg) in [
        ("nginx", "nginx-light"),
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
        ("venv", "python3-venv"),
    ] {
        let l = line(&stdout, name);
        assert!(l.trim_start().starts_with("missing"), "{l}");
        assert!(l.contains(&format!("apt-get install -y {pkg}")), "{l}");
    }

    // Installed packages are trusted; and this machine, after set-up, has everything.
    let dir = tempfile::tempdir().unwrap();
    let path = fake_path(dir.path(), Some("printf 'install ok installed'"));
    let stdout = String::from_utf8_lossy(&clients_check(Some(&path)).stdout).into_owned();
    for name in ["nginx", "chromium", "chromedriver"] {
        let l = line(&stdout, name);
        assert!(l.trim_start().starts_with("found"), "{stdout}");
        assert!(l.contains("package "), "{l}");
    }
    let out = clients_check(None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
}

#[test]
fn cpu_flags_build_llama_cpp_for_the_instruction_sets_present() {
    let dir = tempfile::tempdir().unwrap();
    let run = |flags: &str, portable: bool| {
        let file = dir.path().join("cpuinfo");
        std::fs::write(&file, format!("processor\t: 0\nflags\t\t: {flags}\n")).unwrap();
        let out = Command::new("/bin/bash")
            .arg(repo().join("scripts/cpu_flags.sh"))
            .env("CPUINFO", &file)
            .env("SOVRAG_PORTABLE_BUILD", if portable { "1" } else { "0" })
            .output()
            .expect("run cpu_flags.sh");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let avx512 = "fpu sse2 avx avx2 fma bmi2 avx512f avx512dq avx512cd avx512bw avx512vl \
                  avx512vbmi avx512_vnni avx_vnni";
    let out = run(avx512, false);
    for v in [
        "GGML_AVX512",
        "GGML_AVX512_VNNI",
        "GGML_AVX512_VBMI",
        "GGML_AVX_VNNI",
        "GGML_BMI2",
    ] {
        assert!(out.contains(&format!("export {v}=ON\n")), "{v}: {out}");
    }
    assert!(!out.contains("BF16"), "{out}");
    // AVX2 only (the default build), and a part of AVX-512 short of the set llama.cpp's
    // AVX-512 build compiles for: nothing to add.
    assert_eq!(run("fpu sse2 avx avx2 fma", false), "");
    assert_eq!(run("avx2 avx512f avx512dq avx512cd", false), "");
    // A binary for other machines.
    assert_eq!(run(avx512, true), "");
}

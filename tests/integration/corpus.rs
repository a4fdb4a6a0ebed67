//! The built-in guide (`corpus/`): search finds the right page, `ask` cites real lines.

use std::path::Path;
use std::sync::OnceLock;

use crate::util::*;

/// One index of corpus/ shared by the tests in this module (indexing it is the slow part).
fn corpus_index() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = run_ok(sovrag(dir.path()).arg("index").arg(repo().join("corpus")));
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("0 skipped"), "{summary}");
        dir
    })
    .path()
}

/// Questions a user would ask, phrased unlike the headings, each answered on one page.
const QUESTIONS: &[(&str, &str)] = &[
    (
        "do I need to restart to watch a new directory?",
        "watching.md",
    ),
    ("can I index PDF documents?", "file-types.md"),
    (
        "which wins, an environment variable or the config file?",
        "configuration.md",
    ),
    (
        "how do I install on a computer with no internet connection?",
        "offline-install.md",
    ),
    ("why is bm25_score null for some results?", "search.md"),
    (
        "how many layers should I offload to the graphics card?",
        "gpu.md",
    ),
    (
        "what happens if the model writes [7] but there were only five sources?",
        "answers-and-citations.md",
    ),
    (
        "where does sovrag keep its LanceDB and tantivy files?",
        "architecture.md",
    ),
    ("does sovrag send usage data home?", "privacy.md"),
    ("the build says protoc is missing", "troubleshooting.md"),
    (
        "how big is each passage and can I make them smaller?",
        "chunking.md",
    ),
    (
        "what exit code does sovrag return for a wrong flag?",
        "cli.md",
    ),
];

#[test]
fn questions_rank_their_page_first() {
    let data = corpus_index();
    let mut first = 0;
    let mut report = Vec::new();
    for (q, page) in QUESTIONS {
        let hits = json_of(&run_ok(
            sovrag(data).args(["query", q, "--k", "3", "--json"]),
        ));
        let paths: Vec<String> = hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                h["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            paths.iter().any(|p| p == page),
            "{q:?}: {page} not in top 3: {paths:?}"
        );
        if paths[0] == *page {
            first += 1;
        } else {
            report.push(format!("{q:?}: got {} before {page}", paths[0]));
        }
    }
    assert!(
        first >= 10,
        "only {first}/{} ranked first: {report:#?}",
        QUESTIONS.len()
    );
}

#[test]
fn ask_cites_lines_that_hold_the_cited_text() {
    let data = corpus_index();
    let out = run_ok(sovrag(data).args(["ask", "How do I watch another folder?", "--json"]));
    let answer = json_of(&out);
    assert!(
        !answer["answer"].as_str().unwrap().trim().is_empty(),
        "{answer}"
    );
    let citations = answer["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "no citation: {answer}");
    for c in citations {
        let path = c["path"].as_str().unwrap();
        assert!(
            Path::new(path).is_file(),
            "cited path {path} does not exist"
        );
        let (start, end) = (
            c["start_line"].as_u64().unwrap(),
            c["end_line"].as_u64().unwrap(),
        );
        assert!(start >= 1 && end >= start, "{c}");
        let lines = lines_of(path, start, end);
        let cited = c["text"].as_str().unwrap();
        assert!(
            lines.contains(cited.trim()),
            "{path}:{start}-{end} does not hold the cited text.\nlines:\n{lines}\ncited:\n{cited}"
        );
    }
    assert!(
        citations
            .iter()
            .any(|c| c["path"].as_str().unwrap().ends_with("watching.md")),
        "the watching page is cited: {answer}"
    );
}

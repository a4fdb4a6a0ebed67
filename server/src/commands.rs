//! What each subcommand does, on top of the engine.

use std::io::{IsTerminal, Write};

use std::path::Path;

use anyhow::{Context, Result};

use sovrag_generate::{AnswerKind, AskOptions};

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::engine::{DocumentText, Engine};

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,sovrag=info,sovrag_ingest=info,sovrag_retrieve=info,sovrag_generate=info",
        _ => "info,sovrag=debug,sovrag_ingest=debug,sovrag_retrieve=debug,sovrag_generate=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

pub async fn run(cli: Cli) -> Result<()> {
    let config = Config::resolve(cli.config.as_deref(), cli.settings)?;
    // Commands that use the models are counted in the usage ledger (`report`).
    if matches!(
        cli.command,
        Command::Index { .. }
            | Command::Query { .. }
            | Command::Ask { .. }
            | Command::Serve { .. }
            | Command::Eval { .. }
    ) {
        crate::usage::open(&config.data_dir);
    }
    let result = command(config, cli.command).await;
    crate::usage::flush();
    result
}

async fn command(config: Config, command: Command) -> Result<()> {
    match command {
        Command::Index { paths, json } => index(config, &paths, json).await,
        Command::Query { text, k, json } => query(config, &text, k, json).await,
        Command::Ask {
            question,
            k,
            json,
            schema,
        } => ask(config, &question, k, json, schema.as_deref()).await,
        Command::Serve { replica } => serve(config, replica).await,
        Command::Status { json } => status(config, json).await,
        Command::Verify { paths, json } => verify(config, &paths, json).await,
        Command::Extract { files, json } => extract(&config, &files, json),
        Command::Doctor {
            json,
            store: Some(uri),
        } => crate::scale_out::check_store(&config, &uri, json).await,
        Command::Doctor { json, store: None } => doctor(&config, json),
        Command::Report {
            days,
            json,
            costs_template,
        } => {
            if costs_template {
                print!("{}", crate::report::BUILT_IN_COSTS);
                return Ok(());
            }
            let r = crate::report::build(&config.data_dir, config.costs.as_ref(), days)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", crate::report::render(&r));
            }
            Ok(())
        }
        Command::Feedback {
            answer_id,
            rating,
            correction,
        } => {
            let log = crate::answers::AnswerLog::new(&config.data_dir);
            match log.feedback(&answer_id, rating, correction)? {
                Some(_) => {
                    println!("feedback kept for {answer_id}");
                    Ok(())
                }
                None => anyhow::bail!(
                    "no answer {answer_id} is kept in {}",
                    config.data_dir.display()
                ),
            }
        }
        Command::Forget { before } => {
            let n = crate::answers::AnswerLog::new(&config.data_dir).forget_before(&before)?;
            println!("removed {n} answers kept before {before}");
            Ok(())
        }
        Command::Export {
            what: crate::cli::Export::Finetune { min_rating, out },
        } => {
            let entries = crate::answers::AnswerLog::new(&config.data_dir).entries()?;
            let (text, n) = crate::answers::finetune_jsonl(&entries, min_rating)?;
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote {n} examples of {} kept answers to {}",
                entries.len(),
                out.display()
            );
            Ok(())
        }
        Command::Eval {
            beir,
            qa,
            predictions_out,
            na_prob_out,
            limit,
            passages,
            grammar,
            mode,
            k,
            json,
            run_out,
            embed_bench,
            scale_bench,
            scale_dir,
        } => match (qa, beir) {
            (Some(dir), _) => {
                let opts = crate::eval::qa::QaOptions {
                    limit,
                    passages,
                    constrain: grammar.is_on(),
                    predictions_out,
                    na_prob_out,
                };
                crate::eval::qa::run(config, &dir, opts, json).await
            }
            (None, Some(beir)) if !scale_bench.is_empty() => {
                crate::eval::scale::run(config, &beir, &scale_bench, scale_dir.as_deref(), json)
                    .await
            }
            (None, Some(beir)) => match embed_bench {
                Some(n) => crate::eval::embed_bench(config, &beir, n, json).await,
                None => crate::eval::run(config, &beir, mode, k, json, run_out).await,
            },
            (None, None) => anyhow::bail!("eval needs --beir DIR or --qa DIR"),
        },
    }
}

fn doctor(config: &Config, json: bool) -> Result<()> {
    let keys = crate::http::Keys::new(config.api_keys.clone(), config.api_key_file.clone())?;
    let (report, ok) = crate::doctor::check(config, keys.required())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::doctor::render(&report));
    }
    if !ok {
        anyhow::bail!(
            "a needed model is missing or does not match its pinned sha256: run `{}`",
            sovrag_ingest::models::SETUP_COMMAND
        );
    }
    Ok(())
}

async fn index(mut config: Config, paths: &[std::path::PathBuf], json: bool) -> Result<()> {
    config.role = sovrag_retrieve::Role::Writer;
    let writer = crate::scale_out::Writer::start(&config).await?;
    let engine = Engine::open(config).await?;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bar:40} {pos}/{len} files {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let r = engine
        .index_paths(paths, &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .await;
    bar.finish_and_clear();
    if let Some(w) = writer {
        w.release().await;
    }
    let r = r?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "indexed {} files ({} unchanged, {} skipped, {} removed), {} chunks in {:.1}s",
        r.indexed, r.unchanged, r.skipped, r.removed, r.chunks, r.seconds
    );
    if r.pages > 0 {
        println!("read {} PDF pages", r.pages);
    }
    if !r.skipped_by_reason.is_empty() {
        let why: Vec<String> = r
            .skipped_by_reason
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        println!(
            "skipped: {} (`sovrag status` lists each file)",
            why.join(", ")
        );
    }
    Ok(())
}

/// Where a citation's passage is (see [`place`]).
fn cited(c: &sovrag_generate::Citation) -> String {
    place(
        &c.path,
        c.start_line,
        c.end_line,
        c.page,
        c.section.as_deref(),
    )
}

/// Where a span is, as the CLI prints it: `report.pdf p. 12, lines 40-52 · Intro › Setup`
/// for a paged document, `notes.md:40-52` for a text file.
fn place(path: &str, start: u32, end: u32, page: Option<u32>, section: Option<&str>) -> String {
    use sovrag_ingest::extract::Format;
    let mut s = match page {
        Some(p) => {
            let name = Format::of(std::path::Path::new(path)).and_then(Format::page_name);
            let name = if name == Some("slide") { "slide" } else { "p." };
            format!("{path} {name} {p}, lines {start}-{end}")
        }
        None => format!("{path}:{start}-{end}"),
    };
    if let Some(section) = section {
        s.push_str(" · ");
        s.push_str(section);
    }
    s
}

fn check_k(k: usize) -> Result<usize> {
    anyhow::ensure!((1..=100).contains(&k), "--k must be between 1 and 100");
    Ok(k)
}

async fn query(config: Config, text: &str, k: usize, json: bool) -> Result<()> {
    let k = check_k(k)?;
    anyhow::ensure!(!text.trim().is_empty(), "the query is empty");
    let engine = Engine::open(config).await?;
    let hits = engine.query(text, k).await?;
    if json {
        println!("{}", serde_json::json!({ "hits": hits }));
        return Ok(());
    }
    if hits.is_empty() {
        println!("no match");
    }
    for (i, h) in hits.iter().enumerate() {
        println!(
            "{}. {}  (score {:.4})",
            i + 1,
            place(
                &h.path,
                h.start_line,
                h.end_line,
                h.location.page,
                h.location.section.as_deref()
            ),
            h.score
        );
        for line in h.text.lines().take(4) {
            println!("   {line}");
        }
    }
    Ok(())
}

async fn ask(
    config: Config,
    question: &str,
    k: usize,
    json: bool,
    schema: Option<&std::path::Path>,
) -> Result<()> {
    let k = check_k(k)?;
    anyhow::ensure!(!question.trim().is_empty(), "the question is empty");
    let kind = match schema {
        Some(path) => AnswerKind::Schema(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the schema {}", path.display()))?,
        ),
        None => AnswerKind::Prose,
    };
    let structured = kind != AnswerKind::Prose;
    let opts = AskOptions {
        kind,
        verify: config.verify,
        ..AskOptions::default()
    };
    let engine = Engine::open(config).await?;
    let answer = engine
        .ask(question, k, None, opts, move |piece| {
            if !json {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(());
    }
    println!();
    if structured {
        return Ok(());
    }
    // What streamed is the checked answer: each sentence once verification keeps it.
    if let Some(v) = &answer.verification
        && !v.dropped.is_empty()
    {
        println!(
            "(verification dropped {} of {} sentences as unsupported by their passages)",
            v.dropped.len(),
            v.checked
        );
    }
    if !answer.citations.is_empty() {
        println!("\nSources:");
        for c in &answer.citations {
            let mark = if c.verified { "" } else { " (not verified)" };
            println!("[{}] {}{mark}", c.n, cited(c));
        }
    }
    if answer.abstained && !answer.sources.is_empty() {
        println!("\nClosest sources:");
        for c in &answer.sources {
            println!("- {}", cited(c));
        }
    }
    if !answer.dropped_markers.is_empty() {
        eprintln!(
            "note: dropped citation markers that named no passage: {:?}",
            answer.dropped_markers
        );
    }
    Ok(())
}

async fn serve(mut config: Config, replica: bool) -> Result<()> {
    let keys = crate::http::Keys::new(config.api_keys.clone(), config.api_key_file.clone())?;
    let addrs = crate::http::check_bind(&config.bind, keys.required())?;
    anyhow::ensure!(
        !replica || config.remote.is_some(),
        "--replica follows an index on object storage: pass --data-dir s3://bucket/prefix"
    );
    anyhow::ensure!(
        !replica || config.watch.is_empty(),
        "a replica does not write: watch folders on the writer (`sovrag serve --watch …`)"
    );
    if !replica {
        config.role = sovrag_retrieve::Role::Writer;
    }
    let writer = crate::scale_out::Writer::start(&config).await?;
    let mut roots = Vec::new();
    for w in &config.watch {
        let root = std::fs::canonicalize(w).with_context(|| format!("--watch {}", w.display()))?;
        anyhow::ensure!(root.is_dir(), "--watch {}: not a folder", w.display());
        roots.push(root);
    }
    let reconcile_secs = config.reconcile_secs;
    let follows = config.remote.is_some() && (replica || config.allow_concurrent_writers);
    let engine = Engine::open(config).await?;
    if follows {
        crate::scale_out::follow(engine.clone());
    }
    let reconcile_every =
        (reconcile_secs > 0).then(|| std::time::Duration::from_secs(reconcile_secs));
    for root in roots {
        let e = engine.clone();
        let starting = engine.work_ahead(crate::engine::Work::Reconcile);
        tokio::spawn(async move {
            if let Err(err) = crate::watch::watch(e, root.clone(), reconcile_every, starting).await
            {
                tracing::error!("{err:#}");
            }
        });
    }
    // Load both models now so the first question does not pay for them.
    let e = engine.clone();
    tokio::spawn(async move {
        if let Err(err) = e.embedder().await {
            tracing::error!("embedding model: {err:#}");
        }
        if let Err(err) = e.generator().await {
            tracing::error!("generator: {err:#}");
        }
    });
    let served = crate::http::serve(engine, addrs, keys).await;
    if let Some(w) = writer {
        w.release().await;
    }
    served
}

async fn status(config: Config, json: bool) -> Result<()> {
    let (s, from) = match server_status(&config) {
        Some(s) => (s, format!(" (from the server at {})", config.bind)),
        None => (Engine::open(config).await?.status().await?, String::new()),
    };
    if json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!(
        "{} documents, {} chunks in {}{from}",
        s.documents, s.chunks, s.data_dir
    );
    if let Some(st) = &s.store {
        let f = &st.following;
        let checked = f
            .checked_secs_ago
            .map_or(String::new(), |t| format!(", checked {t:.1} s ago"));
        println!(
            "{} of {}: table version {}{checked}; caught up {} documents ({} chunks), {} rebuilds",
            st.role, st.uri, f.version, f.documents_applied, f.rows_applied, f.rebuilds
        );
    }
    if s.indexing {
        let mut what = vec![
            if s.reconciling {
                "reconciling"
            } else {
                "syncing"
            }
            .to_string(),
        ];
        if let Some(p) = &s.progress {
            what.push(format!("{}/{} files", p.done, p.total));
        }
        println!("indexing: {}", what.join(", "));
    }
    if s.queue > 0 {
        println!("queue: {} changed paths waiting", s.queue);
    }
    for (root, how) in &s.watching {
        println!("watching {root}: {how}");
    }
    if s.problem_count > 0 {
        println!("problems ({}):", s.problem_count);
        for (path, problem) in &s.problems {
            println!("  {path}: {problem}");
        }
    }
    Ok(())
}

/// The running server's status, if one answers at the configured address: only it knows
/// its queue, its activity and the problems it met.
fn server_status(config: &Config) -> Option<crate::engine::Status> {
    use std::io::Read;
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(2);
    let addr = config.bind.to_socket_addrs().ok()?.next()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    // Any key the server takes.
    let key = crate::http::Keys::new(config.api_keys.clone(), config.api_key_file.clone())
        .ok()
        .and_then(|k| k.any());
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /v1/status HTTP/1.0\r\nHost: {}\r\n{auth}\r\n",
        config.bind
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    let s: crate::engine::Status = serde_json::from_str(body).ok()?;
    // Another server's index is not the one asked about.
    (Path::new(&s.data_dir) == config.data_dir).then_some(s)
}

async fn verify(config: Config, paths: &[std::path::PathBuf], json: bool) -> Result<()> {
    let engine = Engine::open(config).await?;
    let v = engine.verify(paths).await?;
    if json {
        println!("{}", serde_json::to_string(&v)?);
    } else {
        for line in &v.violations {
            println!("{line}");
        }
        println!(
            "checked {} files and {} chunks: {} violations",
            v.files,
            v.chunks,
            v.violations.len()
        );
    }
    if !v.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// `sovrag extract FILE...`: the text indexing reads, through the same workers and limits.
fn extract(config: &Config, files: &[std::path::PathBuf], json: bool) -> Result<()> {
    // Not through the cache: the point is to see what extraction does now.
    let x = crate::engine::extractor(config, false)?;
    let mut failed = 0usize;
    for file in files {
        let path = file.display().to_string();
        match extract_one(config, &x, file) {
            Ok(doc) if json => println!("{}", serde_json::to_string(&doc)?),
            Ok(doc) => {
                if files.len() > 1 {
                    println!("==> {path} <==");
                }
                print_extracted(&doc)?;
            }
            Err(e) => {
                failed += 1;
                let reason = e
                    .downcast_ref::<sovrag_ingest::extract::Failure>()
                    .map(|f| f.reason())
                    .or_else(|| match e.downcast_ref::<sovrag_ingest::Error>() {
                        Some(sovrag_ingest::Error::Skipped { kind, .. }) => Some(*kind),
                        _ => None,
                    })
                    .unwrap_or("unreadable");
                if json {
                    let line = serde_json::json!({"path": path, "error": format!("{e:#}"), "reason": reason});
                    println!("{line}");
                }
                eprintln!("sovrag: error: {path}: {e:#}");
            }
        }
    }
    if failed > 0 {
        if files.len() == 1 {
            std::process::exit(1);
        }
        anyhow::bail!("{failed} of {} files could not be read", files.len());
    }
    Ok(())
}

fn extract_one(
    config: &Config,
    x: &sovrag_ingest::extract::Extractor,
    file: &Path,
) -> Result<DocumentText> {
    use sovrag_ingest::extract::Format;
    let path = file.display().to_string();
    Ok(match Format::of(file) {
        Some(_) => DocumentText::extracted(&path, x.extract(file, "")?),
        None => {
            let d = sovrag_ingest::load::load_document(file, config.max_file_bytes, x)?;
            DocumentText::new(&path, None, Some(d.title), d.text)
        }
    })
}

fn print_extracted(doc: &DocumentText) -> Result<()> {
    let page_name = doc.page_name.unwrap_or("page");
    let mut out = std::io::stdout().lock();
    let mut next = doc.pages.iter().peekable();
    for (i, line) in doc.text.split('\n').enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        while let Some(p) = next.next_if(|p| p.start_line <= n) {
            writeln!(out, "      ── {page_name} {} ──", p.page)?;
        }
        writeln!(out, "{n:>5}  {line}")?;
    }
    Ok(())
}

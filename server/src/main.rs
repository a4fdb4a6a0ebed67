//! The `sovrag` binary: command-line definition and glue. All the work is in the
//! `sovrag-ingest`, `sovrag-retrieve` and `sovrag-generate` crates, put together in `engine`.

mod answers;
mod cli;
mod commands;
mod config;
mod doctor;
mod egress;
mod engine;
mod eval;
mod files;
mod http;
mod report;
mod scale_out;
mod usage;
mod watch;

use clap::Parser;

/// The hidden first argument that runs this binary as an extraction worker
/// (`sovrag_ingest::extract::Isolation`), before clap, logging or the async runtime.
pub(crate) const EXTRACT_WORKER: &str = "__extract-worker";

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == EXTRACT_WORKER) {
        let code = sovrag_ingest::extract::worker_main();
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = cli::Cli::parse();
    commands::init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sovrag: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sovrag: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

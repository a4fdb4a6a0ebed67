//! The `sovrag` binary: command-line definition and glue. All the work is in the
//! `sovrag-ingest`, `sovrag-retrieve` and `sovrag-generate` crates, put together in `engine`.

mod cli;
mod commands;
mod config;
mod engine;
mod eval;
mod http;
mod watch;

use clap::Parser;

fn main() -> std::process::ExitCode {
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

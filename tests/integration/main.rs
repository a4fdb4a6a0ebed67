//! End-to-end tests of sovrag: the real binary, real models, real stores, real HTTP.

mod util;

mod answers;
mod cli;
mod clients;
mod corpus;
mod documents;
mod eval;
mod http;
mod ledger;
mod openai;
mod scale_out;
mod setup;
mod sovereignty;
mod watch;

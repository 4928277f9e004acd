//! `spike-bench`: benchmark the Spike engine in-process, measured against the raw device.
//! See `tools/src/bench/mod.rs` for how a run goes, and `--help` for the options.

#[path = "../bench/mod.rs"]
mod bench;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = bench::options::Args::parse();
    let result = bench::options::Plan::from_args(args).and_then(bench::run);
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("spike-bench: error: {}", spike_tools::text::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

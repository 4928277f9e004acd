//! `spike-inspect`: the command line of [`spike_tools::inspect`], which looks at one Spike
//! device offline and never writes to it (see that module for what each subcommand reads,
//! what it costs, and what `check` calls an inconsistency).
//!
//! Exit codes: 0 consistent (or the listing succeeded), 1 `check` found inconsistencies,
//! 2 the device could not be inspected (in use, not a Spike device, I/O error) or bad usage.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use spike_tools::inspect::{self, check::CRASH_WINDOW_DEFAULT, EXIT_CANNOT_INSPECT};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "spike-inspect",
    version,
    about = "Inspect a Spike device offline (read-only; refuses a device an engine holds)",
    after_help = "Exit codes: 0 ok, 1 check found inconsistencies, 2 cannot inspect the device."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the device header (both slots, every field).
    Header {
        /// Block device or file holding one Spike device.
        #[arg(long)]
        device: PathBuf,
    },
    /// Print space use: write blocks, live bytes, block fill histogram, records.
    Stats {
        /// Block device or file holding one Spike device.
        #[arg(long)]
        device: PathBuf,
    },
    /// Verify every write-block header and record; exit 1 naming each inconsistency.
    Check {
        /// Block device or file holding one Spike device.
        #[arg(long)]
        device: PathBuf,
        /// Damage in the blocks holding the last N write sequences of the device is taken
        /// as a crash's torn writes and tolerated. Raise it for a device that crashed and
        /// then ran on (its torn blocks stay); 0 tolerates none.
        #[arg(long, default_value_t = CRASH_WINDOW_DEFAULT)]
        crash_window: u64,
    },
    /// List every live record (newest copy per digest), sorted by digest, one per line.
    Records {
        /// Block device or file holding one Spike device (each device of a namespace
        /// lists its own records).
        #[arg(long)]
        device: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = run(cli.command, &mut out).and_then(|code| {
        out.flush().context("writing to standard output")?;
        Ok(code)
    });
    match result {
        Ok(code) => ExitCode::from(code),
        // `spike-inspect records | head` closes the pipe early: not an error worth a message.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("spike-inspect: error: {}", spike_tools::text::error_chain(&err));
            ExitCode::from(EXIT_CANNOT_INSPECT)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe))
}

fn run(command: Command, out: &mut dyn Write) -> Result<u8> {
    match command {
        Command::Header { device } => inspect::header::print(&device, out).map(|()| 0),
        Command::Stats { device } => inspect::stats::print(&device, out).map(|()| 0),
        Command::Check { device, crash_window } => inspect::check::run(&device, crash_window, out),
        Command::Records { device } => inspect::records::print(&device, out).map(|()| 0),
    }
}

//! `hallmark`: the operator node, local devnets, and the client commands.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod demo;

/// Hallmark: provenance and ownership of physical items, certified by a federation of
/// operators and anchored in Bitcoin.
#[derive(Parser)]
#[command(name = "hallmark", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the protocol end to end in one process: a 3-of-4 federation certifies a
    /// manufacturer, a mint and a transfer; a client verifies the item's history, and a
    /// tampered history is caught. Needs no network and no bitcoind.
    Demo,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => demo::run(),
    }
}

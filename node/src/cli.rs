//! The `hallmark` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{OperatorConfig, PaymentMode};
use crate::{demo, devnet, service};

/// Hallmark: provenance and ownership of physical items, certified by a federation of
/// operators and anchored in Bitcoin.
#[derive(Parser)]
#[command(name = "hallmark", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a federation operator.
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// A local federation of operator processes on loopback.
    #[command(subcommand)]
    Devnet(DevnetCmd),
    /// Runs the protocol end to end in one process: a 3-of-4 federation certifies a
    /// manufacturer, a mint and a transfer; a client verifies the item's history, and a
    /// tampered history is caught. Needs no network and no bitcoind.
    Demo,
}

#[derive(Subcommand)]
enum OperatorCmd {
    /// Run one operator until Ctrl-C or SIGTERM.
    Run {
        /// The operator's config file (operator.toml).
        #[arg(long, env = "HALLMARK_OPERATOR_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DevnetCmd {
    /// Write keys and configs for a local federation into DIR.
    Init(InitArgs),
    /// Start every operator of DIR as a separate process; Ctrl-C stops them cleanly.
    Up {
        /// The devnet directory.
        dir: PathBuf,
    },
}

#[derive(Args)]
struct InitArgs {
    /// Number of operators.
    #[arg(long, default_value_t = 4)]
    operators: u32,
    /// Signatures a certificate needs (must be more than half; 3-of-4 tolerates one faulty operator).
    #[arg(long, default_value_t = 3)]
    quorum: u32,
    /// First port: operator i listens on p2p BASE+i, HTTP BASE+100+i, metrics BASE+200+i
    /// (keep below 32768, where Linux hands out ephemeral ports).
    #[arg(long, default_value_t = 27100)]
    base_port: u16,
    /// How operators check sale payments: none, or mock (accepts any settlement; tests and demos).
    #[arg(long, value_enum, default_value = "mock")]
    payments: PaymentArg,
    /// Base timeout of a voting round, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    round_timeout_ms: u64,
    /// The devnet directory (created; must be empty).
    dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PaymentArg {
    None,
    Mock,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_gossipsub=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signals(token: CancellationToken) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo => demo::run(),
        Command::Operator(OperatorCmd::Run { config }) => {
            let loaded = OperatorConfig::load(&config)?;
            let cancel = CancellationToken::new();
            cancel_on_signals(cancel.clone())?;
            service::run(loaded, cancel).await
        }
        Command::Devnet(DevnetCmd::Init(a)) => {
            devnet::init(
                &a.dir,
                &devnet::InitOptions {
                    operators: a.operators,
                    quorum: a.quorum,
                    ports: devnet::Ports::Base(a.base_port),
                    payments: match a.payments {
                        PaymentArg::None => PaymentMode::None,
                        PaymentArg::Mock => PaymentMode::Mock,
                    },
                    round_timeout_ms: a.round_timeout_ms,
                },
            )?;
            println!(
                "devnet: {} operators, {}-of-{}, written to {}; start it with `hallmark devnet up {}`",
                a.operators,
                a.quorum,
                a.operators,
                a.dir.display(),
                a.dir.display()
            );
            Ok(())
        }
        Command::Devnet(DevnetCmd::Up { dir }) => devnet::up(&dir).await,
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

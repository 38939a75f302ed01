//! The `hallmark` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::commands::{self, ClientOpts, Ctx, KeyCmd, ManufacturerCmd};
use crate::config::{OperatorConfig, PaymentMode};
use crate::{demo, devnet, service};

/// Hallmark: provenance and ownership of physical items, certified by a federation of
/// operators and anchored in Bitcoin.
#[derive(Parser)]
#[command(name = "hallmark", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Subcommand)]
enum Command {
    /// Run a federation operator.
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// A local federation of operator processes on loopback.
    #[command(subcommand)]
    Devnet(DevnetCmd),
    /// Key pairs (files with mode 0600).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Manufacturer registration.
    #[command(subcommand)]
    Manufacturer(ManufacturerCmd),
    /// Mint an item as a registered manufacturer; prints its id and the URI for its QR/NFC tag.
    Mint {
        /// Serial number (unique per manufacturer).
        #[arg(long)]
        serial: String,
        /// What the item is.
        #[arg(long, default_value = "item")]
        product: String,
        /// First owner's public key (default: the manufacturer's own key).
        #[arg(long)]
        owner: Option<hallmark_protocol::PublicKey>,
    },
    /// Give an item you own to someone else.
    Transfer {
        /// Item id or hallmark: URI.
        item: String,
        /// New owner's public key.
        #[arg(long)]
        to: hallmark_protocol::PublicKey,
    },
    /// Show an item's verified history (exit codes as for scan).
    History {
        /// Item id or hallmark: URI.
        item: String,
    },
    /// Verify an item against several operators at once, trusting none of them.
    ///
    /// Prints AUTHENTIC (with owner and state), COUNTERFEIT (histories served, none verifies),
    /// UNKNOWN (never minted), INCONSISTENT (operators serve conflicting certified histories) or
    /// UNREACHABLE, with the reasons and what each operator said. Exit codes: 0 authentic,
    /// 10 counterfeit, 11 unknown, 12 inconsistent, 13 unreachable, 1 other errors.
    Scan {
        /// Item id or hallmark:<item>@<federation> URI (what the tag carries).
        item: String,
    },
    /// Printable QR labels (SVG and PNG) encoding items' scan URLs, for one item or a batch.
    ///
    /// Each item is scanned first; if any is not AUTHENTIC nothing is written. The QR code
    /// encodes <base-url>/scan/?item=<id>&federation=<federation-id>: the scan page of an
    /// operator, which verifies the item in the browser against several operators.
    Label {
        /// Item ids or hallmark: URIs.
        items: Vec<String>,
        /// Serial numbers of items minted by your key (the manufacturer), repeatable.
        #[arg(long = "serial")]
        serials: Vec<String>,
        /// Directory for the label files (<serial>_<id>.svg and .png).
        #[arg(long, default_value = "labels")]
        out_dir: PathBuf,
        /// Base URL of the scan page (default: the first operator's API in the federation file).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Your BDK wallet (regtest; persisted next to your key file).
    Wallet {
        #[command(subcommand)]
        cmd: crate::sales::WalletCmd,
        #[command(flatten)]
        bitcoin: crate::proofs::BitcoinOpts,
    },
    /// Offer to buy an item from its current owner (buyer).
    Offer {
        /// Item id or hallmark: URI.
        item: String,
        /// Price in satoshis.
        #[arg(long)]
        price: u64,
    },
    /// Accept an offer (seller): the item is locked in escrow under an invoice computed from the
    /// federation's fee schedule.
    Accept {
        /// Offer id.
        offer: String,
        /// Where your payout goes (a regtest address).
        #[arg(long)]
        payout: String,
        /// Blocks from the current tip until the payment deadline.
        #[arg(long, default_value_t = 144)]
        deadline_blocks: u32,
        /// An explicit deadline height instead.
        #[arg(long)]
        deadline_height: Option<u32>,
    },
    /// Pay an accepted offer in one transaction (buyer): every invoice output plus an OP_RETURN
    /// binding the payment to this offer.
    Pay {
        /// Offer id.
        offer: String,
        /// Fee rate, sat/vB.
        #[arg(long, default_value_t = 2)]
        fee_rate: u64,
        #[command(flatten)]
        bitcoin: crate::proofs::BitcoinOpts,
    },
    /// Settle a paid sale: ownership moves to the buyer once operators verify the payment.
    Settle {
        /// Offer id.
        offer: String,
        /// The payment transaction.
        #[arg(long)]
        payment: bitcoin::Txid,
    },
    /// Return an unpaid escrowed item to its seller after the deadline.
    Expire {
        /// Offer id.
        offer: String,
    },
    /// Proof bundles and OpenTimestamps export.
    #[command(subcommand)]
    Proof(crate::proofs::ProofCmd),
    /// Check a proof bundle offline: certificates, checkpoint inclusion, the anchoring
    /// transaction and its Merkle branch, against block headers you trust (exit 0 valid, 20 invalid).
    VerifyProof {
        /// The bundle (from `hallmark proof get`).
        file: PathBuf,
        /// Trusted block headers, hex, one per line (e.g. from `bitcoin-cli getblockheader <hash> false`).
        #[arg(long)]
        headers: Option<PathBuf>,
        #[command(flatten)]
        bitcoin: crate::proofs::BitcoinOpts,
    },
    /// Audit the federation's checkpoints and Bitcoin anchors against your own bitcoind
    /// (exit 0 passed, 20 failed).
    Audit {
        #[command(flatten)]
        bitcoin: crate::proofs::BitcoinOpts,
    },
    /// Load benchmark: a local federation of operator processes driven by concurrent clients;
    /// prints certified events/s, latency percentiles, CPU/RSS per operator, bytes per event,
    /// and the host's speed (one secp256k1 verify) before and during the run.
    Bench(crate::bench::BenchOpts),
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
    /// Print the address that funds this operator's anchoring wallet.
    Address {
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
    /// How operators check sale payments: bitcoind (needs --bitcoin-rpc), mock (accepts any
    /// settlement; tests and offline demos) or none.
    #[arg(long, value_enum, default_value = "mock")]
    payments: PaymentArg,
    /// Base timeout of a voting round, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    round_timeout_ms: u64,
    /// Propose a checkpoint once this many events are not yet in one...
    #[arg(long, default_value_t = 1000)]
    checkpoint_every_events: usize,
    /// ...or after this many seconds.
    #[arg(long, default_value_t = 60)]
    checkpoint_every_secs: u64,
    /// Seconds before the next operator anchors a checkpoint nobody anchored.
    #[arg(long, default_value_t = 600)]
    anchor_timeout_secs: u64,
    /// bitcoind RPC URL shared by the devnet's operators (regtest); enables anchoring.
    #[arg(long)]
    bitcoin_rpc: Option<String>,
    /// bitcoind RPC user.
    #[arg(long, requires = "bitcoin_rpc")]
    rpc_user: Option<String>,
    /// bitcoind RPC password.
    #[arg(long, requires = "bitcoin_rpc")]
    rpc_password: Option<String>,
    /// The devnet directory (created; must be empty).
    dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PaymentArg {
    None,
    Mock,
    Bitcoind,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM, with what happened ("interrupted" or
/// "terminated"). The handlers are installed when it is called, not when it is first polled.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted",
            _ = term.recv() => "terminated",
        }
    })
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signals(token: CancellationToken) -> Result<()> {
    let signal = shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        token.cancel();
    });
    Ok(())
}

async fn run(cli: Cli) -> Result<u8> {
    let opts = cli.client;
    match cli.command {
        Command::Key(cmd) => commands::key(&opts, &cmd).map(|()| 0),
        Command::Manufacturer(ManufacturerCmd::Register { name }) => {
            commands::register(&Ctx::load(&opts)?, &name)
                .await
                .map(|()| 0)
        }
        Command::Mint {
            serial,
            product,
            owner,
        } => commands::mint(&Ctx::load(&opts)?, &serial, &product, owner)
            .await
            .map(|()| 0),
        Command::Transfer { item, to } => commands::transfer(&Ctx::load(&opts)?, &item, to)
            .await
            .map(|()| 0),
        Command::History { item } => commands::history(&Ctx::load(&opts)?, &item).await,
        Command::Scan { item } => commands::scan(&Ctx::load(&opts)?, &item).await,
        Command::Label {
            items,
            serials,
            out_dir,
            base_url,
        } => {
            crate::label::label(
                &Ctx::load(&opts)?,
                &items,
                &serials,
                &out_dir,
                base_url.as_deref(),
            )
            .await
        }
        Command::Wallet { cmd, bitcoin } => {
            crate::sales::wallet(&Ctx::load(&opts)?, &cmd, &opts.key, &bitcoin)
        }
        Command::Offer { item, price } => {
            crate::sales::offer(&Ctx::load(&opts)?, &item, price).await
        }
        Command::Accept {
            offer,
            payout,
            deadline_blocks,
            deadline_height,
        } => {
            crate::sales::accept(
                &Ctx::load(&opts)?,
                &offer,
                &payout,
                deadline_blocks,
                deadline_height,
            )
            .await
        }
        Command::Pay {
            offer,
            fee_rate,
            bitcoin,
        } => crate::sales::pay(&Ctx::load(&opts)?, &offer, &opts.key, &bitcoin, fee_rate).await,
        Command::Settle { offer, payment } => {
            crate::sales::settle(&Ctx::load(&opts)?, &offer, payment).await
        }
        Command::Expire { offer } => crate::sales::expire(&Ctx::load(&opts)?, &offer).await,
        Command::Proof(cmd) => crate::proofs::proof(&Ctx::load(&opts)?, &cmd).await,
        Command::VerifyProof {
            file,
            headers,
            bitcoin,
        } => {
            crate::proofs::verify_proof(&Ctx::load(&opts)?, &file, headers.as_deref(), &bitcoin)
                .await
        }
        Command::Audit { bitcoin } => crate::proofs::run_audit(&Ctx::load(&opts)?, &bitcoin).await,
        Command::Bench(o) => crate::bench::run(&o).await.map(|()| 0),
        Command::Demo => demo::run().map(|()| 0),
        Command::Operator(OperatorCmd::Run { config }) => {
            let loaded = OperatorConfig::load(&config)?;
            let cancel = CancellationToken::new();
            cancel_on_signals(cancel.clone())?;
            service::run(loaded, cancel).await.map(|()| 0)
        }
        Command::Operator(OperatorCmd::Address { config }) => {
            let loaded = OperatorConfig::load(&config)?;
            let network = loaded
                .config
                .bitcoin
                .as_ref()
                .map_or(Ok(bitcoin::Network::Regtest), |b| b.network())?;
            println!(
                "{}",
                hallmark_wallet::first_address(&loaded.key.secret_bytes(), network)
            );
            Ok(0)
        }
        Command::Devnet(DevnetCmd::Init(a)) => {
            let mut opts =
                devnet::InitOptions::new(a.operators, a.quorum, devnet::Ports::Base(a.base_port));
            opts.payments = match a.payments {
                PaymentArg::None => PaymentMode::None,
                PaymentArg::Mock => PaymentMode::Mock,
                PaymentArg::Bitcoind => PaymentMode::Bitcoind,
            };
            opts.round_timeout_ms = a.round_timeout_ms;
            opts.checkpoint_every_events = a.checkpoint_every_events;
            opts.checkpoint_every_secs = a.checkpoint_every_secs;
            opts.anchor_timeout_secs = a.anchor_timeout_secs;
            opts.bitcoin = a.bitcoin_rpc.map(|url| crate::config::BitcoinConfig {
                rpc_url: url,
                rpc_user: a.rpc_user.clone(),
                rpc_password: a.rpc_password.clone(),
                cookie_file: None,
                network: "regtest".into(),
                fee_floor_sat_vb: 1,
                bump_after_secs: a.anchor_timeout_secs,
            });
            devnet::init(&a.dir, &opts)?;
            println!(
                "devnet: {} operators, {}-of-{}, written to {}; start it with `hallmark devnet up {}`",
                a.operators,
                a.quorum,
                a.operators,
                a.dir.display(),
                a.dir.display()
            );
            Ok(0)
        }
        Command::Devnet(DevnetCmd::Up { dir }) => devnet::up(&dir).await.map(|()| 0),
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
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! Client commands of the `hallmark` CLI: keys, manufacturer registration, mint, transfer,
//! history and scan. Each prints human output, or JSON with `--json`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hallmark_protocol::{
    CertifiedEvent, Event, EventHash, EventKind, Federation, ItemId, ItemStatus, ManufacturerId,
    Phase, PublicKey,
};
use serde_json::json;

use crate::client::{Author, Client, SubmitOutcome};
use crate::config::FederationFile;
use crate::keyfile;
use crate::verifier::{self, OperatorAnswer, ScanReport, Verdict};

/// Options shared by the client commands.
#[derive(Args, Clone, Debug)]
pub struct ClientOpts {
    /// The federation file: the trust root (operator keys, quorum) and where operators are.
    #[arg(
        long,
        env = "HALLMARK_FEDERATION",
        default_value = "federation.toml",
        global = true
    )]
    pub federation: PathBuf,
    /// Your key file (see `hallmark key new`).
    #[arg(
        long,
        env = "HALLMARK_KEY",
        default_value = "hallmark.key",
        global = true
    )]
    pub key: PathBuf,
    /// Operator API URLs to use, comma-separated or repeated (default: every member in the
    /// federation file).
    #[arg(long = "operator", value_delimiter = ',', global = true)]
    pub operator_urls: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for each operator, in milliseconds.
    #[arg(long, default_value_t = 3000, global = true)]
    pub timeout_ms: u64,
    /// How long to wait for an event's certificate, in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub wait_ms: u64,
}

/// Key commands.
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a new key pair in the key file (mode 0600; never overwrites).
    New,
    /// Show the key file's public key and the ids derived from it.
    Show,
}

/// Manufacturer commands.
#[derive(Subcommand, Debug)]
pub enum ManufacturerCmd {
    /// Register your key as a manufacturer under a name.
    Register {
        /// Display name.
        #[arg(long)]
        name: String,
    },
}

/// Loaded client context.
pub struct Ctx {
    opts: ClientOpts,
    federation: Federation,
    operators: Vec<(usize, Client)>,
}

impl Ctx {
    /// Loads the federation file and the operator list.
    pub fn load(opts: &ClientOpts) -> Result<Self> {
        let (federation, peers) = FederationFile::load(&opts.federation).with_context(|| {
            "a client needs the federation file (--federation or HALLMARK_FEDERATION)"
        })?;
        let timeout = Duration::from_millis(opts.timeout_ms);
        let operators = if opts.operator_urls.is_empty() {
            peers
                .iter()
                .map(|p| (p.index, Client::new(&p.http, timeout)))
                .collect()
        } else {
            opts.operator_urls
                .iter()
                .enumerate()
                .map(|(i, u)| (i, Client::new(u, timeout)))
                .collect()
        };
        Ok(Self {
            opts: opts.clone(),
            federation,
            operators,
        })
    }

    /// The author of this client's events (its key file).
    pub fn author(&self) -> Result<Author> {
        Ok(Author::new(
            self.federation.id(),
            keyfile::read(&self.opts.key)?,
        ))
    }

    /// Submits an event to the operators in turn until one certifies it. A rejection is final,
    /// except "unavailable right now" (503: overloaded, its bitcoind down, stopping), which moves
    /// on to the next operator.
    pub async fn submit(&self, event: &Event) -> Result<CertifiedEvent> {
        let wait = Duration::from_millis(self.opts.wait_ms);
        let mut last = None;
        for (i, c) in &self.operators {
            match c.submit(event, wait).await {
                Ok(SubmitOutcome::Certified(ce)) => return Ok(*ce),
                Ok(SubmitOutcome::Rejected {
                    status,
                    code,
                    message,
                }) if status == 503 => {
                    last = Some(format!("operator {i} ({status} {code}): {message}"));
                }
                Ok(SubmitOutcome::Rejected {
                    status,
                    code,
                    message,
                }) => {
                    bail!("operator {i} rejected the event ({status} {code}): {message}")
                }
                Ok(SubmitOutcome::Pending(h)) => {
                    let deadline = Instant::now() + wait;
                    while Instant::now() < deadline {
                        if let Ok(Some(ce)) = c.event(&h).await {
                            return Ok(ce);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    last = Some(format!(
                        "operator {i}: event {h} still pending after {} ms",
                        self.opts.wait_ms
                    ));
                }
                Err(e) => last = Some(format!("operator {i}: {e:#}")),
            }
        }
        bail!(
            "no operator certified the event: {}",
            last.unwrap_or_else(|| "no operators".into())
        )
    }

    /// The federation (trust root).
    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    /// The operators to use.
    pub fn operators(&self) -> &[(usize, Client)] {
        &self.operators
    }

    /// Whether JSON output was asked for.
    pub fn json(&self) -> bool {
        self.opts.json
    }

    /// Scans with every configured operator.
    pub async fn scan(&self, item: ItemId) -> ScanReport {
        verifier::scan(
            &self.federation,
            &self.operators,
            item,
            Duration::from_millis(self.opts.timeout_ms),
        )
        .await
    }

    fn uri(&self, item: &ItemId) -> String {
        format!("hallmark:{item}@{}", self.federation.id())
    }

    /// Parses an item id or a `hallmark:<item>@<federation>` URI.
    pub fn item(&self, s: &str) -> Result<ItemId> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("hallmark:") {
            let (item, fed) = rest
                .split_once('@')
                .context("a hallmark URI is hallmark:<item-id>@<federation-id>")?;
            if fed != self.federation.id().to_string() {
                bail!(
                    "this tag is for federation {fed}, not {} (wrong --federation?)",
                    self.federation.id()
                );
            }
            return item.parse().context("bad item id in the URI");
        }
        s.parse()
            .context("an item is 64 hex digits or a hallmark:<item>@<federation> URI")
    }

    pub fn print(&self, value: &serde_json::Value, text: &str) {
        if self.opts.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{text}");
        }
    }
}

/// `key new` / `key show`.
pub fn key(opts: &ClientOpts, cmd: &KeyCmd) -> Result<()> {
    let k = match cmd {
        KeyCmd::New => {
            let k = keyfile::generate();
            keyfile::write(&opts.key, &k)?;
            k
        }
        KeyCmd::Show => keyfile::read(&opts.key)?,
    };
    let pk = k.public_key();
    let v =
        json!({"key_file": opts.key, "public_key": pk, "manufacturer_id": ManufacturerId::of(&pk)});
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if matches!(cmd, KeyCmd::New) {
            println!("new key written to {} (mode 0600)", opts.key.display());
        }
        println!(
            "public key       {pk}\nmanufacturer id  {}",
            ManufacturerId::of(&pk)
        );
    }
    Ok(())
}

fn certified_line(ce: &CertifiedEvent, fed: &Federation) -> String {
    let c = &ce.certificate;
    let how = match c.phase {
        Phase::Prevote => "fast: every operator's first vote".to_string(),
        Phase::Commit => format!("commit votes, round {}", c.round),
    };
    format!(
        "event {} certified by {} of {} operators ({how})",
        c.event,
        c.attestations.len(),
        fed.quorum().n(),
    )
}

/// `manufacturer register`.
pub async fn register(ctx: &Ctx, name: &str) -> Result<()> {
    let a = ctx.author()?;
    let ev = a.event(
        0,
        EventHash::ZERO,
        EventKind::RegisterManufacturer { name: name.into() },
    );
    let ce = ctx.submit(&ev).await?;
    let id = ManufacturerId::of(&a.key.public_key());
    ctx.print(
        &json!({"manufacturer_id": id, "name": name, "certified": ce}),
        &format!(
            "registered manufacturer {name}\n  id     {id}\n  {}",
            certified_line(&ce, &ctx.federation)
        ),
    );
    Ok(())
}

/// `mint`.
pub async fn mint(ctx: &Ctx, serial: &str, product: &str, owner: Option<PublicKey>) -> Result<()> {
    let a = ctx.author()?;
    let owner = owner.unwrap_or(a.key.public_key());
    let ev = a.event(
        0,
        EventHash::ZERO,
        EventKind::Mint {
            serial: serial.into(),
            product: product.into(),
            owner,
        },
    );
    let ce = ctx.submit(&ev).await?;
    let item = ItemId::new(&ManufacturerId::of(&a.key.public_key()), serial);
    ctx.print(
        &json!({"item_id": item, "uri": ctx.uri(&item), "owner": owner, "certified": ce}),
        &format!(
            "minted {serial} ({product})\n  item   {item}\n  uri    {}\n  owner  {owner}\n  {}",
            ctx.uri(&item),
            certified_line(&ce, &ctx.federation)
        ),
    );
    Ok(())
}

/// Builds an owner's next event on the item's *verified* state (a scan), then submits it.
async fn owner_event(
    ctx: &Ctx,
    item: &str,
    kind: impl FnOnce(ItemId) -> EventKind,
) -> Result<(ItemId, CertifiedEvent)> {
    let item = ctx.item(item)?;
    let report = ctx.scan(item).await;
    let Some(state) = report
        .state
        .filter(|_| report.verdict == Verdict::Authentic)
    else {
        bail!(
            "cannot act on item {item}: scan says {:?} ({})",
            report.verdict,
            report.reasons.join("; ")
        );
    };
    let a = ctx.author()?;
    let ce = ctx.submit(&a.next(&state, kind(item))).await?;
    Ok((item, ce))
}

/// `transfer`.
pub async fn transfer(ctx: &Ctx, item: &str, to: PublicKey) -> Result<()> {
    let (item, ce) = owner_event(ctx, item, |item| EventKind::Transfer { item, to }).await?;
    ctx.print(
        &json!({"item_id": item, "to": to, "certified": ce}),
        &format!(
            "transferred {item} to {to}\n  {}",
            certified_line(&ce, &ctx.federation)
        ),
    );
    Ok(())
}

/// `history`: the verified history (a scan), event by event.
pub async fn history(ctx: &Ctx, item: &str) -> Result<u8> {
    let item = ctx.item(item)?;
    let report = ctx.scan(item).await;
    let mut events = Vec::new();
    if report.verdict == Verdict::Authentic {
        let agreeing = report.operators.iter().find(|o| o.agrees).map(|o| o.index);
        if let Some((_, c)) = ctx.operators.iter().find(|(i, _)| Some(*i) == agreeing) {
            if let Some(h) = c.history(&item).await? {
                events = h.events;
            }
        }
    }
    if ctx.opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"scan": report, "events": events}))?
        );
    } else {
        println!("{}", render_scan(&report));
        for ce in &events {
            let b = &ce.event.body;
            println!(
                "  #{:<3} {:<20} by {}  {}  cert {}-of-{}",
                b.height,
                b.kind.name(),
                b.author.short(),
                ce.certificate.event,
                ce.certificate.attestations.len(),
                ctx.federation.quorum().n()
            );
        }
    }
    Ok(report.verdict.exit_code())
}

/// `scan`.
pub async fn scan(ctx: &Ctx, item: &str) -> Result<u8> {
    let item = ctx.item(item)?;
    let report = ctx.scan(item).await;
    if ctx.opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", render_scan(&report));
    }
    Ok(report.verdict.exit_code())
}

/// Human rendering of a scan.
pub fn render_scan(r: &ScanReport) -> String {
    let mut out = String::new();
    let headline = match (&r.verdict, r.state.as_ref().map(|s| &s.status)) {
        (Verdict::Authentic, Some(ItemStatus::Stolen)) => "AUTHENTIC — REPORTED STOLEN".to_string(),
        (Verdict::Authentic, Some(ItemStatus::LockedInEscrow(_))) => {
            "AUTHENTIC — LOCKED IN ESCROW (sale in progress)".to_string()
        }
        (Verdict::Authentic, Some(ItemStatus::Retired)) => "AUTHENTIC — RETIRED".to_string(),
        (v, _) => format!("{v:?}").to_uppercase(),
    };
    out.push_str(&format!("{headline}\n  item      {}\n", r.item));
    if let (Some(s), Some(m)) = (&r.state, &r.manufacturer) {
        out.push_str(&format!(
            "  product   {} (serial {})\n  maker     {} ({})\n  owner     {}\n  state     {}, {} events\n",
            s.product, s.serial, m.name, m.id, s.owner, s.status.name(), r.events
        ));
    }
    for reason in &r.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    for o in &r.operators {
        let what = match &o.answer {
            OperatorAnswer::Valid { height, .. } if o.agrees => {
                format!("verified, height {height}")
            }
            OperatorAnswer::Valid { height, .. } => format!("verified but behind, height {height}"),
            OperatorAnswer::NotFound => "unknown item".into(),
            OperatorAnswer::Invalid { reason } => format!("INVALID: {reason}"),
            OperatorAnswer::Unreachable { error } => format!("unreachable: {error}"),
        };
        out.push_str(&format!("  operator {} {:<28} {what}\n", o.index, o.url));
    }
    out.push_str(&format!("  ({} ms)", r.elapsed_ms));
    out
}

//! The scan page in a real headless Chromium: a federation, items minted through the CLI, a QR
//! label printed by `hallmark label`, then `tests/browser/scan.e2e.mjs` (playwright-core) drives
//! the page through authentic, unknown, locked, tampered and uploaded-label scans, on a phone-
//! and a desktop-sized screen, and saves screenshots.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use hallmark_tests::Harness;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scan_page_verifies_in_chromium() -> Result<()> {
    ensure!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/setup.sh (npm ci in tests/browser)"
    );
    ensure!(
        Path::new(&std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into())).exists(),
        "Chromium is not installed: run scripts/setup.sh (Debian package chromium)"
    );
    let h = Harness::start(BIN, 4, 3).await?;
    let dir = tempfile::tempdir()?;
    let key = |who: &str| dir.path().join(format!("{who}.key"));
    for who in ["maker", "alice", "bob", "carol"] {
        h.cli_ok(&key(who), &["key", "new"], &[])?;
    }
    let public = |who: &str| -> Result<String> {
        let v = h.cli_ok(&key(who), &["key", "show"], &[])?;
        Ok(v["public_key"].as_str().context("public key")?.to_string())
    };
    let (alice, bob) = (public("alice")?, public("bob")?);
    h.cli_ok(
        &key("maker"),
        &["manufacturer", "register", "--name", "Acme Watches"],
        &[],
    )?;
    let product = "Chronograph ref. 5711";
    let mint = |serial: &str, owner: &str| -> Result<String> {
        let v = h.cli_ok(
            &key("maker"),
            &[
                "mint",
                "--serial",
                serial,
                "--product",
                product,
                "--owner",
                owner,
            ],
            &[],
        )?;
        Ok(v["item_id"].as_str().context("item id")?.to_string())
    };
    // SN-1: minted to alice, given to bob. SN-2: bob's, locked in escrow by carol's offer.
    let item = mint("SN-1", &alice)?;
    h.cli_ok(&key("alice"), &["transfer", &item, "--to", &bob], &[])?;
    let locked = mint("SN-2", &bob)?;
    let offer = h.cli_ok(
        &key("carol"),
        &["offer", &locked, "--price", "2000000"],
        &[],
    )?;
    let offer = offer["offer_id"].as_str().context("offer id")?;
    h.cli_ok(
        &key("bob"),
        &[
            "accept",
            offer,
            "--payout",
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            "--deadline-height",
            "500",
        ],
        &[],
    )?;
    // Wait until every operator holds both items' latest events: the page asks all four.
    for (id, len) in [(&item, 2), (&locked, 2)] {
        hallmark_tests::poll_until(
            std::time::Duration::from_secs(10),
            "histories on every operator",
            || async {
                for i in 0..h.len() {
                    let id = id.parse().ok()?;
                    let hist = h.client(i).history(&id).await.ok()??;
                    if hist.events.len() != len {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await?;
    }

    // The label the manufacturer prints for SN-1.
    let labels = dir.path().join("labels");
    let v = h.cli_ok(
        &key("maker"),
        &[
            "label",
            "--serial",
            "SN-1",
            "--out-dir",
            labels.to_str().context("utf-8")?,
        ],
        &[],
    )?;
    let label_png = v["labels"][0]["png"].as_str().context("png path")?;
    ensure!(Path::new(label_png).exists());
    let base = h.peers[0].http.trim_end_matches('/').to_string();
    ensure!(
        v["labels"][0]["url"]
            == json!(format!(
                "{base}/scan/?item={item}&federation={}",
                h.federation.id()
            )),
        "the label encodes the scan URL: {v}"
    );

    let shots = std::env::var("HALLMARK_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    println!("screenshots: {}", shots.display());
    let cfg = json!({
        "base": base,
        "federation": h.federation.id().to_string(),
        "operators": h.peers.iter().map(|p| p.http.trim_end_matches('/')).collect::<Vec<_>>(),
        "shots": shots,
        "authentic": {"id": item, "owner": bob, "product": product, "serial": "SN-1"},
        "locked": {"id": locked},
        "label_png": label_png,
    });
    let out = Command::new("node")
        .arg(browser_dir().join("scan.e2e.mjs"))
        .env("HALLMARK_E2E", cfg.to_string())
        .current_dir(browser_dir())
        .output()
        .context("running node (scripts/setup.sh installs it)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    ensure!(out.status.success(), "browser test failed:\n{text}");
    for name in [
        "authentic-phone",
        "authentic-desktop",
        "tampered-everywhere-desktop",
    ] {
        ensure!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name} saved"
        );
    }
    Ok(())
}

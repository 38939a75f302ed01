//! `hallmark bench` as a user runs it: a short run in each of its client modes reports what it
//! measured; stopped with SIGTERM (or Ctrl-C) mid-run, it stops the operator processes it
//! started instead of leaving them running on the benchmark's ports.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");

/// The bench's ports are base + i, base + 100 + i and base + 200 + i. Below Linux's ephemeral
/// range (32768 and up) no other test's outgoing connection can hold one; a base whose ports
/// are all free is looked for, since another program may listen there. Each test looks in a
/// range of its own (`range`), since they run at once.
fn free_base_port(range: std::ops::Range<u16>) -> Result<u16> {
    range
        .step_by(300)
        .find(|base| {
            (0..3).all(|k| {
                (0..4)
                    .all(|i| std::net::TcpListener::bind(("127.0.0.1", base + 100 * k + i)).is_ok())
            })
        })
        .context("no free ports for the bench")
}

/// The processes whose parent is `parent`, from `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(") ")?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited already; anything else is still running.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(") ")?.1.starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

#[test]
fn a_terminated_bench_stops_its_operators() -> Result<()> {
    let mut bench = Command::new(BIN)
        .args([
            "bench",
            "--duration",
            "120",
            "--clients",
            "4",
            "--base-port",
            &free_base_port(29_100..30_500)?.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting hallmark bench")?;
    let pid = bench.id();
    let stderr = bench.stderr.take().context("bench stderr")?;
    // Its lines, read on a thread so that waiting for them has a deadline.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Wait until the federation is up and the clients are driving it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(wait) {
            Ok(line) if line.contains("federation up") => break,
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // (SIGTERM, not SIGKILL: the bench then stops its operators.)
                kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
                let _ = bench.wait();
                bail!("the federation did not come up in 60 s: {seen:?}");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("bench exited before the federation was up: {seen:?}");
            }
        }
    }
    let operators = children_of(pid);
    ensure!(
        operators.len() == 4,
        "the bench runs 4 operator processes, found {operators:?}"
    );
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = bench.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = bench.kill();
            bail!("bench did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // (Whatever the outcome, no operator outlives the test.)
    let left: Vec<u32> = operators.into_iter().filter(|p| alive(*p)).collect();
    for p in &left {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
    }
    ensure!(left.is_empty(), "operators left running: {left:?}");
    ensure!(!status.success(), "an interrupted run is not a success");
    let rest: Vec<String> = lines.iter().collect();
    ensure!(
        rest.iter().any(|l| l.contains("terminated")),
        "bench says why it stopped: {rest:?}"
    );
    Ok(())
}

/// A 2-second run with 4 clients, in the default mode (events signed before the run, sent in the
/// binary form) and in the old one (signed during the run, sent as JSON): both certify every
/// event they submit and write the figures as JSON.
#[test]
fn a_short_run_certifies_what_it_submits_in_both_client_modes() -> Result<()> {
    for (flags, encoding, presigned) in [
        (&[][..], "binary", true),
        (&["--json", "--sign-live"][..], "json", false),
    ] {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("bench.json");
        let run = Command::new(BIN)
            .args(["bench", "--duration", "2", "--clients", "4", "--base-port"])
            .arg(free_base_port(30_600..32_000)?.to_string())
            .arg("--out")
            .arg(&out)
            .args(flags)
            .stdin(Stdio::null())
            .output()
            .context("running hallmark bench")?;
        let stdout = String::from_utf8_lossy(&run.stdout);
        ensure!(
            run.status.success(),
            "bench {flags:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
        let certified = r["certified_events_per_s"].as_f64().unwrap_or(0.0);
        ensure!(
            certified > 10.0,
            "{flags:?}: {certified} ev/s certified: {r}"
        );
        ensure!(r["failed_submissions"] == 0, "{flags:?}: failures: {r}");
        ensure!(
            r["latency_ms"]["p50"].as_f64().is_some_and(|p| p > 0.0),
            "{r}"
        );
        ensure!(
            r["encoding"] == encoding && r["events_signed_before_run"] == presigned,
            "{r}"
        );
        // Pre-signed items last the run; signed live, every item is signed during it.
        let live = r["items_signed_during_measurement"]
            .as_u64()
            .unwrap_or(u64::MAX);
        ensure!(
            (live == 0) == presigned,
            "{flags:?}: items signed live: {r}"
        );
        ensure!(stdout.contains("certified events/s"), "{stdout}");
        // Where the time went, from the operators' metrics: every step timed, the certificate
        // after the loop took the event.
        let stages = &r["latency_stages"];
        let mean = |k: &str| stages[format!("{k}_mean_ms")].as_f64().unwrap_or(f64::NAN);
        for k in [
            "admitted",
            "own_prevote_sent",
            "polka",
            "all_prevotes",
            "own_commit_sent",
            "certified",
            "vote_sync",
            "client",
        ] {
            ensure!(mean(k) > 0.0, "{flags:?}: stage {k}: {stages}");
        }
        ensure!(mean("admitted") < mean("certified"), "{stages}");
        ensure!(stdout.contains("where the time goes"), "{stdout}");
        // The host's speed is probed once a second during the measured time.
        let speed = &r["host_speed_during_run"];
        ensure!(speed["probes"].as_u64().unwrap_or(0) >= 1, "{r}");
        let (min, median, max) = (
            speed["verify_us_min"].as_f64().unwrap_or(0.0),
            speed["verify_us_median"].as_f64().unwrap_or(0.0),
            speed["verify_us_max"].as_f64().unwrap_or(0.0),
        );
        ensure!(0.0 < min && min <= median && median <= max, "{r}");
        // The change against the verify timed before the run is what it says.
        let before = r["secp256k1_verify_us"].as_f64().unwrap_or(0.0);
        let slowdown = speed["slowdown_percent"].as_f64().unwrap_or(f64::NAN);
        ensure!(
            before > 0.0 && (slowdown - (median / before - 1.0) * 100.0).abs() < 1e-6,
            "{r}"
        );
        ensure!(stdout.contains("host speed during the run"), "{stdout}");
    }
    Ok(())
}

//! `hallmark bench` as a user runs it: stopped with SIGTERM (or Ctrl-C) mid-run, it stops the
//! operator processes it started instead of leaving them running on the benchmark's ports.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");

/// The bench's ports are base + i, base + 100 + i and base + 200 + i. Below Linux's ephemeral
/// range (32768 and up) no other test's outgoing connection can hold one; a base whose ports
/// are all free is looked for, since another program may listen there.
fn free_base_port() -> Result<u16> {
    (29_100..32_000)
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
            &free_base_port()?.to_string(),
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

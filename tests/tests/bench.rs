//! `hallmark bench` as a user runs it: stopped with SIGTERM (or Ctrl-C) mid-run, it stops the
//! operator processes it started instead of leaving them running on the benchmark's ports.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_hallmark-test-node");

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
            "38100",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting hallmark bench")?;
    let pid = bench.id();
    let stderr = bench.stderr.take().context("bench stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    // Wait until the federation is up and the clients are driving it.
    let started = Instant::now();
    loop {
        let Some(line) = lines.next() else {
            bail!("bench exited before the federation was up");
        };
        if line?.contains("federation up") {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the federation did not come up"
        );
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
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    ensure!(
        rest.iter().any(|l| l.contains("terminated")),
        "bench says why it stopped: {rest:?}"
    );
    Ok(())
}

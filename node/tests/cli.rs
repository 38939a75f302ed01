//! The `hallmark` binary as a user runs it.

use std::process::Command;

fn hallmark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hallmark"))
}

#[test]
fn demo_runs_and_catches_forgeries() {
    let out = hallmark().arg("demo").output().expect("run hallmark demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("AUTHENTIC"), "{stdout}");
    assert_eq!(stdout.matches("REJECTED").count(), 2, "{stdout}");
    assert!(stdout.trim_end().ends_with("demo OK"), "{stdout}");
}

#[test]
fn help_explains_the_commands() {
    let out = hallmark()
        .arg("--help")
        .output()
        .expect("run hallmark --help");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("demo"), "{stdout}");
}

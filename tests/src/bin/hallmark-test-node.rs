//! The `hallmark` binary, built inside this crate so its integration tests can start operator
//! processes (`CARGO_BIN_EXE_hallmark-test-node`).

fn main() -> std::process::ExitCode {
    hallmark_node::cli::main()
}

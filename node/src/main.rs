//! `hallmark`: the operator node, local devnets, and the client commands.

fn main() -> std::process::ExitCode {
    hallmark_node::cli::main()
}

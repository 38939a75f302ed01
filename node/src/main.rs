//! `hallmark`: the operator node, local devnets, and the client commands.

/// mimalloc instead of glibc's malloc: an operator allocates and frees many small buffers per
/// event (HTTP, gossip, encodings), and glibc's malloc and free were ~10 % of its CPU samples.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hallmark_node::cli::main()
}

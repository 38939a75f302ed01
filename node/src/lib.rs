//! The hallmark node: operator service (store, event loop, HTTP API, metrics), local devnets and
//! the command line. `main.rs` only calls [`cli::main`].

pub mod anchoring;
pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod demo;
pub mod devnet;
pub mod engine;
pub mod fifo;
pub mod http;
pub mod keyfile;
pub mod label;
pub mod metrics;
pub mod payments;
pub mod proofs;
pub mod sales;
pub mod scanpage;
pub mod service;
pub mod store;
pub mod verifier;
pub use hallmark_protocol::wire;

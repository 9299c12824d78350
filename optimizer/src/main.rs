//! edgefleet-optimizer: turns a base ONNX model into the best artifact a device class can run,
//! behind an accuracy gate. This build carries the command-line shell and the shared API types;
//! the passes, the evaluator and the search are the next piece of work (see README "Status").

use clap::Parser;

/// Optimizes ONNX vision models per device class behind an accuracy gate.
#[derive(Parser, Debug)]
#[command(name = "edgefleet-optimizer", version)]
struct Args {}

fn main() {
    let _ = Args::parse();
    eprintln!(
        "edgefleet-optimizer {}: no optimization passes in this build yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}

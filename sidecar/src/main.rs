//! edgefleet-sidecar: the inference server and over-the-air agent that runs next to edge
//! applications. This build carries the command-line shell only; serving and OTA are the next
//! pieces of work (see README "Status"). It must stay free of the operator's dependencies.

use clap::Parser;

/// Serves an edgefleet model artifact on localhost and keeps it current over the air.
#[derive(Parser, Debug)]
#[command(name = "edgefleet-sidecar", version)]
struct Args {}

fn main() {
    let _ = Args::parse();
    eprintln!(
        "edgefleet-sidecar {}: no runtime in this build yet",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}

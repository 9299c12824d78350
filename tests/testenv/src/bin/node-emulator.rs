//! `node-emulator --namespace NS --binary NAME=PATH…`: the test-only node (see
//! `edgefleet_testenv::node`) as a process, for `make demo`. Runs until killed. Never shipped.

use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<()> {
    let mut namespace = None;
    let mut binaries = BTreeMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--namespace" => namespace = args.next(),
            "--binary" => {
                let spec = args.next().context("--binary NAME=PATH")?;
                let (name, path) = spec.split_once('=').context("--binary NAME=PATH")?;
                binaries.insert(name.to_string(), PathBuf::from(path).canonicalize()?);
            }
            other => bail!(
                "unknown argument {other:?}; usage: node-emulator --namespace NS --binary NAME=PATH"
            ),
        }
    }
    let namespace = namespace.context("--namespace is required")?;
    let client = kube::Client::try_default().await?;
    let _node = edgefleet_testenv::node::NodeEmulator::start(client, &namespace, binaries);
    eprintln!("node emulator running pods of namespace {namespace}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

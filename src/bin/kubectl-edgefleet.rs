//! `kubectl edgefleet status NAME [-n NAMESPACE]`: a kubectl plugin (put `kubectl-edgefleet`
//! on the PATH) that shows an EdgeModel at a glance: per device class its artifact, accuracy,
//! rollout step and pod counts.

use clap::{Parser, Subcommand};
use edgefleet_api::EdgeModel;
use kube::Api;

#[derive(Parser)]
#[command(name = "kubectl-edgefleet", version, about = "edgefleet at a glance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An EdgeModel: per device class, artifact, accuracy, rollout step and pods.
    Status {
        name: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Status { name, namespace } = Cli::parse().command;
    let client = kube::Client::try_default().await?;
    let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<EdgeModel> = Api::namespaced(client, &ns);
    let model = match api.get_opt(&name).await? {
        Some(m) => m,
        None => anyhow::bail!("EdgeModel {ns}/{name} not found"),
    };
    print!("{}", edgefleet_operator::status::render(&model));
    Ok(())
}

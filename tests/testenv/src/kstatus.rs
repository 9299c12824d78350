//! What kstatus (sigs.k8s.io/cli-utils, the library behind Flux's and kpt's readiness checks)
//! makes of an object: `hack/kstatus/main.go`, built by `hack/build-tool.sh kstatus`.

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn binary() -> Result<&'static str> {
    static BIN: OnceLock<Result<String, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        crate::tool("kstatus")
            .map(|p| p.display().to_string())
            .map_err(|e| format!("{e:#}"))
    })
    .as_deref()
    .map_err(|e| anyhow::anyhow!("building kstatus: {e}"))
}

/// `(status, message)`: status is one of InProgress, Failed, Current, Terminating, NotFound,
/// Unknown.
pub fn status(object: &Value) -> Result<(String, String)> {
    let mut child = Command::new(binary()?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut line = serde_json::to_vec(object)?;
    line.push(b'\n');
    child.stdin.take().context("stdin")?.write_all(&line)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (s, m) = text
        .trim_end()
        .split_once(' ')
        .unwrap_or((text.trim_end(), ""));
    Ok((s.to_string(), m.to_string()))
}

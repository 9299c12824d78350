//! Writes the CustomResourceDefinitions generated from the Rust types to `crds/` and the Helm
//! chart's `charts/edgefleet/crds/` (or the directories given as arguments). `make crds` runs it;
//! a test fails when the committed files differ.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        dirs = vec!["crds".into(), "charts/edgefleet/crds".into()];
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (file, yaml) in edgefleet_operator::crds::render()? {
            let path = dir.join(file);
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

//! Writes the CRDs to `crds/` (or the directory given as the only argument).
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds"));
    match write_all(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crdgen: {error}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = vec![("kustomization.yaml", hostport_api::crds::kustomization())];
    for (file, crd) in hostport_api::crds::all() {
        let yaml =
            hostport_api::crds::to_yaml(&crd).map_err(|e| format!("serializing {file}: {e}"))?;
        files.push((file, yaml));
    }
    for (file, contents) in files {
        let path = dir.join(file);
        std::fs::write(&path, contents).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

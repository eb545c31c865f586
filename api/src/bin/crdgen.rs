//! Writes the CRDs to `crds/` and the Helm chart's `charts/hostport-allocator/crds/` (or to
//! the directory given as the only argument).
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let written = match std::env::args_os().nth(1).map(PathBuf::from) {
        Some(dir) => write_all(&dir, true),
        None => write_all(&root.join("crds"), true)
            .and_then(|()| write_all(&root.join(hostport_api::crds::CHART_CRDS), false)),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crdgen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The CRD files in `dir`, with a kustomization listing them when `kustomization`.
fn write_all(dir: &std::path::Path, kustomization: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = vec![];
    if kustomization {
        files.push(("kustomization.yaml", hostport_api::crds::kustomization()));
    }
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

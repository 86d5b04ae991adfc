//! Building the example guests in `guests/` for tests and benchmarks. Not
//! part of a node: it lives in the library so that the runtime's unit tests,
//! the black-box tests and the benchmarks share one build of the guests.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the guests are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Builds the example guests (wasm32-wasip2, release) with the running cargo
/// and returns the directory holding the `.wasm` files. Adds the target
/// through rustup first when the toolchain lacks it (rustup installs a
/// toolchain file's targets only when it installs the toolchain itself).
pub fn build_example_guests() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guests")
        .canonicalize()?;
    ensure_target(&root)?;
    let target_dir = root.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        // Its own target dir even when CARGO_TARGET_DIR is set, so the
        // path returned below is where the files are.
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .map_err(|e| Error::internal(format!("running cargo for guests/: {e}")))?;
    if !status.success() {
        return Err(Error::internal(format!(
            "building guests/ for {WASM_TARGET} failed (cargo's output above says why)"
        )));
    }
    Ok(target_dir.join(WASM_TARGET).join("release"))
}

/// The rustc cargo runs: the one next to `$CARGO` when there is one (the
/// toolchain's own), else the one on PATH.
fn rustc() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|c| c.parent().map(|d| d.join("rustc")))
        .filter(|r| r.exists())
        .unwrap_or_else(|| "rustc".into())
}

/// True when the toolchain has the target's standard library.
fn has_target(dir: &Path) -> Result<bool> {
    let out = Command::new(rustc())
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .output()
        .map_err(|e| Error::internal(format!("running rustc --print sysroot: {e}")))?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&sysroot)
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .exists())
}

fn ensure_target(dir: &Path) -> Result<()> {
    if has_target(dir)? {
        return Ok(());
    }
    eprintln!("collector: the {WASM_TARGET} target is missing; adding it with rustup");
    // In `dir`, rustup resolves the toolchain from rust-toolchain.toml.
    match Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .current_dir(dir)
        .status()
    {
        Ok(s) if s.success() && has_target(dir)? => Ok(()),
        Ok(_) => Err(Error::internal(format!(
            "`rustup target add {WASM_TARGET}` failed (its output above says why); the tests build guests/ for that target"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::internal(format!(
            "the {WASM_TARGET} target is not installed and rustup is not on PATH: install the {WASM_TARGET} standard library for this toolchain (with rustup: `rustup target add {WASM_TARGET}`)"
        ))),
        Err(e) => Err(Error::internal(format!("running rustup: {e}"))),
    }
}

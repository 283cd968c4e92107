//! Project tasks, run with `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask test [ARGS...]`: the whole test suite (`cargo test --workspace ARGS...`).
//!   The NATS tests start their own `nats-server` on a free loopback port; when no
//!   `nats-server` is found (`NATS_SERVER_BIN`, `PATH`, `/usr/sbin/nats-server`), it is
//!   installed from the system's packages first (`apt-get install nats-server`, through `sudo`
//!   when not root).

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask test [ARGS...]   (ARGS go to `cargo test --workspace`)";

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "xtask: unknown task {:?}\n{USAGE}",
                other.unwrap_or("(none)")
            );
            ExitCode::from(2)
        }
    }
}

fn test(args: Vec<String>) -> ExitCode {
    if let Err(e) = ensure_nats_server() {
        eprintln!("xtask: {e}");
        return ExitCode::FAILURE;
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "--workspace"])
        .args(&args)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Finds `nats-server` the way the tests do (`test-support`), installing it when missing.
fn ensure_nats_server() -> Result<(), String> {
    if let Some(bin) = find_nats_server() {
        println!("xtask: using {}", bin.display());
        return Ok(());
    }
    println!("xtask: nats-server not found; installing Debian's package `nats-server`");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get ({e}); install nats-server by hand, or set NATS_SERVER_BIN to its path"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`apt-get {}` failed ({status}); install nats-server by hand, or set NATS_SERVER_BIN to its path",
                args.join(" ")
            ))
        }
    };
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", "nats-server"])?;
    find_nats_server()
        .map(|_| ())
        .ok_or_else(|| "nats-server is still not found after installing it".to_owned())
}

fn find_nats_server() -> Option<PathBuf> {
    if let Some(bin) = env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let on_path = env::var_os("PATH").and_then(|path| {
        env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let fallback = Path::new("/usr/sbin/nats-server");
        fallback.is_file().then(|| fallback.to_path_buf())
    })
}

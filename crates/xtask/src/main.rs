//! Project tasks, run with `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask test [ARGS...]`: the whole test suite (`cargo test --workspace ARGS...`).
//!   The NATS tests start their own `nats-server` on a free loopback port; when no
//!   `nats-server` is found (`NATS_SERVER_BIN`, `PATH`, `/usr/sbin/nats-server`), it is
//!   installed from the system's packages first (`apt-get install nats-server`, through `sudo`
//!   when not root). So is Debian's `chromium` for `happen web`'s browser test
//!   (`CHROMIUM_BIN`, `chromium` or `chromium-browser` on `PATH`, `/usr/bin/chromium`).
//! - `cargo xtask soak [--long]`: the chaos soak of issue 23
//!   (`crates/happen-nats/tests/chaos_soak.rs`) with its table printed: the short mode (~1
//!   minute, also part of `cargo xtask test`), or with `--long` the ignored long one
//!   (`HAPPEN_SOAK_SECS` of traffic, default 600). `HAPPEN_SOAK_SEED` replays a fault schedule.
//!   nats-server is installed as for `test` when missing.
//! - `cargo xtask instructions [--check | --record]`: instructions per event of happen's
//!   `tell` and `ask-seq` under valgrind's callgrind (load-independent: the same on a busy
//!   machine), from `happen-bench --child` at two event counts, `(total(N2) − total(N1)) /
//!   (N2 − N1)` so that set-up cancels out. `--check` fails when a figure is more than 10 %
//!   above the one recorded in `crates/happen-bench/instructions.txt` (CI runs it: a ratchet);
//!   `--record` writes the measured figures there. valgrind is installed like nats-server when
//!   missing.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod instructions;

const USAGE: &str = "usage:
  cargo xtask test [ARGS...]                        the whole test suite (ARGS go to `cargo test --workspace`)
  cargo xtask soak [--long]                         the chaos soak: short (~1 min) or long (HAPPEN_SOAK_SECS, default 600)
  cargo xtask instructions [--check | --record]     instructions per event (callgrind), checked or recorded";

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("soak") => soak(args.collect()),
        Some("instructions") => instructions::run(args.collect()),
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
    if let Err(e) = ensure_nats_server().and_then(|()| {
        ensure_installed(
            "chromium",
            find_chromium,
            ", or set CHROMIUM_BIN to its path",
        )
    }) {
        eprintln!("xtask: {e}");
        return ExitCode::FAILURE;
    }
    cargo(
        ["test", "--workspace"]
            .iter()
            .copied()
            .map(String::from)
            .chain(args),
    )
}

/// `nats-server`, installed when missing (see [`ensure_installed`]).
fn ensure_nats_server() -> Result<(), String> {
    ensure_installed(
        "nats-server",
        find_nats_server,
        ", or set NATS_SERVER_BIN to its path",
    )
}

/// Runs cargo (the one running this task) with `args`; its exit code is the task's.
fn cargo(args: impl IntoIterator<Item = String>) -> ExitCode {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    match Command::new(cargo).args(args).status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The chaos soak: `soak_short`, or `soak_long` with `--long`, its output shown.
fn soak(args: Vec<String>) -> ExitCode {
    let long = match args.as_slice() {
        [] => false,
        [flag] if flag == "--long" => true,
        _ => {
            eprintln!("xtask: soak takes only --long\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = ensure_nats_server() {
        eprintln!("xtask: {e}");
        return ExitCode::FAILURE;
    }
    let test = if long {
        ["soak_long", "--ignored"].as_slice()
    } else {
        ["soak_short"].as_slice()
    };
    let args = [
        "test",
        "-p",
        "happen-nats",
        "--test",
        "chaos_soak",
        "--",
        "--exact",
        "--nocapture",
    ];
    cargo(args.iter().chain(test).copied().map(String::from))
}

/// Makes sure the program `name` (Debian's package of the same name) is there: `find`
/// locates it; when it finds nothing the package is installed (`apt-get`, through `sudo` when
/// not root) and looked for again. `hint` ends the error message (another way to provide it).
pub(crate) fn ensure_installed(
    name: &str,
    find: fn() -> Option<PathBuf>,
    hint: &str,
) -> Result<(), String> {
    if let Some(bin) = find() {
        println!("xtask: using {}", bin.display());
        return Ok(());
    }
    println!("xtask: {name} not found; installing Debian's package `{name}`");
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
            .map_err(|e| format!("cannot run apt-get ({e}); install {name} by hand{hint}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "`apt-get {}` failed ({status}); install {name} by hand{hint}",
                args.join(" ")
            ))
        }
    };
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", name])?;
    find()
        .map(|_| ())
        .ok_or_else(|| format!("{name} is still not found after installing it"))
}

/// Finds a program on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|path| {
        env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Finds `nats-server` the way the tests do (`test-support`): `NATS_SERVER_BIN` (which then
/// must exist; set it to use another binary), `PATH`, `/usr/sbin/nats-server`.
fn find_nats_server() -> Option<PathBuf> {
    if let Some(bin) = env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    on_path("nats-server").or_else(|| {
        let fallback = Path::new("/usr/sbin/nats-server");
        fallback.is_file().then(|| fallback.to_path_buf())
    })
}

/// Finds a headless-capable chromium the way `happen web`'s browser test does
/// (`crates/happen-cli/tests/web_browser.rs`): `CHROMIUM_BIN` (which then must exist),
/// `chromium` or `chromium-browser` on `PATH`, `/usr/bin/chromium`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(bin) = env::var_os("CHROMIUM_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    on_path("chromium")
        .or_else(|| on_path("chromium-browser"))
        .or_else(|| {
            let fallback = Path::new("/usr/bin/chromium");
            fallback.is_file().then(|| fallback.to_path_buf())
        })
}

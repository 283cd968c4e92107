//! Test and benchmark support for this workspace.
//!
//! The main item is [`NatsServer`], a guard around a real `nats-server`
//! child process listening on a free loopback port. It only uses `std`, so it
//! works the same from synchronous tests, `#[tokio::test]`s and benchmarks.
//!
//! ```no_run
//! use test_support::{NatsServer, NatsServerOptions};
//!
//! let server = NatsServer::start();
//! let url = server.url(); // "nats://127.0.0.1:<port>"
//! # let _ = url;
//!
//! let js = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
//! # drop(js);
//! // Both servers are killed and their temp dirs removed when dropped.
//! ```
//!
//! With the `tls` feature, `NatsServerOptions::with_tls` starts a server that requires TLS,
//! with a certificate signed by a `TestCa` made at test time; [`NatsServer::ca_file`] is the
//! CA to trust. [`NatsServerOptions::with_nkey_user`] requires nkey authentication (a user key
//! made with [`NkeyUser::generate`]).
//!
//! [`NatsCluster`] starts several servers routed together on loopback (3 by default), each
//! with JetStream and its own store, and waits until the cluster has formed; one member can be
//! killed and restarted.
//!
//! The binary is located with [`nats_server_binary`]: the `NATS_SERVER_BIN`
//! environment variable, else `nats-server` on `PATH`, else
//! `/usr/sbin/nats-server`.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod cluster;
#[cfg(feature = "tls")]
mod tls;
pub use crate::cluster::{CLUSTER_NAME, NatsCluster};
#[cfg(feature = "tls")]
pub use crate::tls::TestCa;

/// Environment variable that overrides the `nats-server` binary location.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// Last-resort location of the `nats-server` binary.
const FALLBACK_BIN: &str = "/usr/sbin/nats-server";

/// The default NATS client port; never handed out by [`pick_free_port`] so we
/// cannot collide with a developer's (or CI's) shared server.
const DEFAULT_NATS_PORT: u16 = 4222;

/// How long a single launch may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Delay between readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Timeout for the TCP connect of a readiness probe.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// Read timeout while waiting for the INFO line.
const PROBE_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// How many fresh ports to try when a randomly picked port turns out taken.
const RANDOM_PORT_ATTEMPTS: usize = 5;

/// How many times to retry a fixed port that is (still) in use.
const FIXED_PORT_ATTEMPTS: usize = 30;

/// Delay between attempts on a fixed port that is (still) in use.
const FIXED_PORT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// nats-server's default `max_pending`; `max_payload` may not exceed it.
const DEFAULT_MAX_PENDING: usize = 64 * 1024 * 1024;

/// Name of the log file (server stdout + stderr) inside the temp dir.
const LOG_FILE: &str = "nats-server.log";

/// Name of the generated config file inside the temp dir.
const CONFIG_FILE: &str = "nats-server.conf";

/// Stem of the server certificate and key files (`<stem>-cert.pem`, `<stem>-key.pem`).
#[cfg(feature = "tls")]
const SERVER_CERT_STEM: &str = "server";

/// Name of the subdirectory holding the server's CA (inside the temp dir).
#[cfg(feature = "tls")]
const CA_DIR: &str = "ca";

/// Name of the JetStream store directory inside the temp dir.
const JETSTREAM_DIR: &str = "jetstream";

/// Name of the `--ports_file_dir` directory inside the temp dir.
const PORTS_DIR: &str = "ports";

/// Returns the path of the `nats-server` binary to run.
///
/// Resolution order: the [`NATS_SERVER_BIN_ENV`] (`NATS_SERVER_BIN`)
/// environment variable if set and non-empty, else the first `nats-server`
/// file found on `PATH`, else `/usr/sbin/nats-server` (which may not exist).
pub fn nats_server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(NATS_SERVER_BIN_ENV)
        && !bin.is_empty()
    {
        return PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(FALLBACK_BIN)
}

/// Returns `true` if the binary from [`nats_server_binary`] can be run
/// (`nats-server --version` succeeds).
///
/// Useful to skip tests gracefully on machines without `nats-server`.
pub fn nats_server_available() -> bool {
    Command::new(nats_server_binary())
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Options for [`NatsServer::start_with`].
///
/// All fields are public; the `with_*` methods are chainable shorthands.
/// [`Default`] gives a plain server (no JetStream, no auth, random port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsServerOptions {
    /// Extra command-line arguments appended after the generated ones
    /// (`-a 127.0.0.1 -p <port>` and the flags implied by the other options).
    pub args: Vec<String>,
    /// Enable JetStream (`-js`), storing into a private temp directory that
    /// survives [`NatsServer::restart`] and is removed on drop.
    pub jetstream: bool,
    /// Maximum message payload in bytes (written to a generated config file;
    /// `max_pending` is raised as needed). `None` keeps the server default.
    pub max_payload: Option<usize>,
    /// Listen on this port instead of a random free one (e.g. to simulate a
    /// server coming back on a known address). If the port is in use, start
    /// is retried for ~3 s and then panics.
    pub port: Option<u16>,
    /// Require this `(user, password)` (`--user` / `--pass`).
    pub user_password: Option<(String, String)>,
    /// Require this token (`--auth`).
    pub token: Option<String>,
    /// Require TLS (`tls { cert_file, key_file }` in the generated config), with a server
    /// certificate for `127.0.0.1` signed by a CA generated at start (see
    /// [`NatsServer::ca_file`]). Needs the `tls` feature.
    pub tls: bool,
    /// Require nkey authentication: the public keys (`U...`) of the users allowed in
    /// (`authorization { users = [{ nkey }] }` in the generated config). Not combined with
    /// `user_password` or `token`.
    pub nkey_users: Vec<String>,
    /// Subject permissions of some of the `nkey_users` (by public key): `permissions {
    /// publish { allow }, subscribe { allow } }` in the generated config. A user without an
    /// entry may publish and subscribe anywhere.
    pub nkey_permissions: Vec<(String, UserPermissions)>,
}

/// The subjects one nkey user may publish and subscribe to (see
/// [`NatsServerOptions::with_nkey_user_permissions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPermissions {
    /// Subjects (with `*` / `>` wildcards) the user may publish to.
    pub publish: Vec<String>,
    /// Subjects (with wildcards) the user may subscribe to.
    pub subscribe: Vec<String>,
}

impl NatsServerOptions {
    /// Same as [`NatsServerOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one extra command-line argument.
    pub fn with_arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several extra command-line arguments.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Enables JetStream.
    pub fn with_jetstream(mut self) -> Self {
        self.jetstream = true;
        self
    }

    /// Sets the maximum payload size in bytes.
    pub fn with_max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Listens on a fixed port instead of a random free one.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Requires user/password authentication.
    pub fn with_user_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// Requires token authentication.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Requires TLS with a certificate made at start (needs the `tls` feature; see
    /// [`NatsServer::ca_file`] for the CA to trust).
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Requires nkey authentication and lets in the user with this public key (`U...`, e.g.
    /// [`NkeyUser::public_key`]); may be called for several users.
    pub fn with_nkey_user(mut self, public_key: impl Into<String>) -> Self {
        self.nkey_users.push(public_key.into());
        self
    }

    /// As [`with_nkey_user`](Self::with_nkey_user), confined to `permissions`: the server
    /// refuses the user's publishes and subscriptions elsewhere.
    pub fn with_nkey_user_permissions(
        mut self,
        public_key: impl Into<String>,
        permissions: UserPermissions,
    ) -> Self {
        let key = public_key.into();
        self.nkey_users.push(key.clone());
        self.nkey_permissions.push((key, permissions));
        self
    }

    /// The generated config file's contents, `None` when no option needs one.
    fn config_file(&self, tls: Option<(&Path, &Path)>) -> Option<String> {
        let mut config = String::new();
        if let Some(max_payload) = self.max_payload {
            config.push_str(&format!("max_payload: {max_payload}\n"));
            if max_payload > DEFAULT_MAX_PENDING {
                config.push_str(&format!("max_pending: {max_payload}\n"));
            }
        }
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
                cert.display().to_string(),
                key.display().to_string()
            ));
        }
        if !self.nkey_users.is_empty() {
            config.push_str("authorization {\n  users: [\n");
            for key in &self.nkey_users {
                match self.nkey_permissions.iter().find(|(k, _)| k == key) {
                    Some((_, p)) => config.push_str(&format!(
                        "    {{ nkey: {key:?}, permissions: {{ publish: {{ allow: {:?} }}, subscribe: {{ allow: {:?} }} }} }}\n",
                        p.publish, p.subscribe
                    )),
                    None => config.push_str(&format!("    {{ nkey: {key:?} }}\n")),
                }
            }
            config.push_str("  ]\n}\n");
        }
        (!config.is_empty()).then_some(config)
    }
}

/// A user nkey pair generated at test time: give [`public_key`](NkeyUser::public_key) to the
/// server ([`NatsServerOptions::with_nkey_user`]) and [`seed`](NkeyUser::seed) to the client.
/// `Debug` does not show the seed.
#[derive(Clone)]
pub struct NkeyUser {
    public_key: String,
    seed: String,
}

impl NkeyUser {
    /// Generates a fresh user key pair.
    ///
    /// # Panics
    ///
    /// If the seed cannot be encoded (not expected for a freshly generated key).
    pub fn generate() -> NkeyUser {
        let pair = nkeys::KeyPair::new_user();
        NkeyUser {
            public_key: pair.public_key(),
            seed: pair
                .seed()
                .unwrap_or_else(|e| panic!("test-support: cannot encode an nkey seed: {e}")),
        }
    }

    /// The public key (`U...`), for the server's configuration.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The seed (`SU...`), the client's secret.
    pub fn seed(&self) -> &str {
        &self.seed
    }
}

impl fmt::Debug for NkeyUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NkeyUser")
            .field("public_key", &self.public_key)
            .field("seed", &"***")
            .finish()
    }
}

/// A running `nats-server` child process listening on `127.0.0.1`.
///
/// Dropping the guard kills and reaps the process and removes its private
/// temp directory (log file, generated config, JetStream store, ports file).
///
/// Readiness means: the port accepts TCP connections, the server's `INFO`
/// line was received, and that `INFO` provably came from this child (its
/// `--ports_file_dir` file exists, or its log names the same server id) —
/// so a foreign server squatting on the port is never mistaken for ours.
///
/// All constructors and [`restart`](NatsServer::restart) panic with a
/// descriptive message (including the server log) if the server cannot be
/// started: this type is meant for tests.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// Whether `port` is registered in [`ALLOCATED_PORTS`] by us.
    port_allocated: bool,
    bin: PathBuf,
    opts: NatsServerOptions,
    /// Whether a config file was written (`-c`).
    config_file: bool,
    /// The CA that signed the server certificate (with the `tls` option).
    #[cfg(feature = "tls")]
    ca: Option<TestCa>,
    dir: TempDir,
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.port)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("bin", &self.bin)
            .field("dir", &self.dir.path)
            .field("opts", &self.opts)
            .finish()
    }
}

impl NatsServer {
    /// Starts a plain server (no JetStream, no auth) on a random free port
    /// and waits until it is ready to accept clients.
    ///
    /// # Panics
    ///
    /// If the server cannot be started or does not become ready in ~10 s.
    pub fn start() -> NatsServer {
        Self::start_with(NatsServerOptions::default())
    }

    /// Starts a server configured by `opts` and waits until it is ready to
    /// accept clients (the port accepts TCP connections and the server's
    /// `INFO` line has been received).
    ///
    /// With a random port, a port lost to a race with another process is
    /// retried on a fresh port a few times.
    ///
    /// # Panics
    ///
    /// If the server cannot be started or does not become ready in ~10 s.
    pub fn start_with(opts: NatsServerOptions) -> NatsServer {
        let bin = nats_server_binary();
        let dir = TempDir::new().unwrap_or_else(|e| {
            panic!("test-support: cannot create a temp dir for nats-server: {e}")
        });
        let ports_dir = dir.path.join(PORTS_DIR);
        fs::create_dir(&ports_dir)
            .unwrap_or_else(|e| panic!("test-support: cannot create {}: {e}", ports_dir.display()));
        #[cfg(feature = "tls")]
        let (ca, server_cert) = if opts.tls {
            let ca_dir = TempDir::inside(&dir.path, CA_DIR).unwrap_or_else(|e| {
                panic!("test-support: cannot create a directory for the test CA: {e}")
            });
            let ca = TestCa::in_dir(ca_dir, "happen test CA");
            let files = ca.issue_server_cert(&dir.path, SERVER_CERT_STEM);
            (Some(ca), Some(files))
        } else {
            (None, None)
        };
        #[cfg(not(feature = "tls"))]
        let server_cert: Option<(PathBuf, PathBuf)> = if opts.tls {
            panic!("test-support: a TLS server needs the `tls` feature of test-support");
        } else {
            None
        };
        let config = opts.config_file(
            server_cert
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path())),
        );
        if let Some(config) = &config {
            let path = dir.path.join(CONFIG_FILE);
            fs::write(&path, config)
                .unwrap_or_else(|e| panic!("test-support: cannot write {}: {e}", path.display()));
        }

        let mut server = NatsServer {
            child: None,
            port: 0,
            port_allocated: false,
            bin,
            opts,
            config_file: config.is_some(),
            #[cfg(feature = "tls")]
            ca,
            dir,
        };

        if let Some(port) = server.opts.port {
            server.port = port;
            server.launch_on_fixed_port();
            return server;
        }

        let mut last_log = String::new();
        for _ in 0..RANDOM_PORT_ATTEMPTS {
            server.port = pick_free_port();
            server.port_allocated = true;
            match server.launch() {
                Ok(child) => {
                    server.child = Some(child);
                    return server;
                }
                Err(LaunchError::AddrInUse(log)) => {
                    release_port(server.port);
                    server.port_allocated = false;
                    last_log = log;
                }
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "test-support: nats-server could not bind a free port after {RANDOM_PORT_ATTEMPTS} \
             attempts (ports kept being taken); last log:\n{last_log}"
        );
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The certificate of the CA that signed the server's certificate (PEM), for a client's
    /// root certificates; `None` unless started [`with_tls`](NatsServerOptions::with_tls).
    pub fn ca_file(&self) -> Option<PathBuf> {
        #[cfg(feature = "tls")]
        {
            self.ca.as_ref().map(TestCa::ca_file)
        }
        #[cfg(not(feature = "tls"))]
        {
            None
        }
    }

    /// The client port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client socket address, `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The options this server was started with.
    pub fn options(&self) -> &NatsServerOptions {
        &self.opts
    }

    /// Process id of the running server, or `None` after [`stop`](Self::stop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the log file receiving the server's stdout and stderr
    /// (appended to across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path.join(LOG_FILE)
    }

    /// Current contents of the log file (lossy UTF-8; empty if unreadable).
    pub fn logs(&self) -> String {
        read_log(&self.log_path(), 0)
    }

    /// The JetStream store directory, if JetStream is enabled.
    pub fn jetstream_store_dir(&self) -> Option<PathBuf> {
        self.opts
            .jetstream
            .then(|| self.dir.path.join(JETSTREAM_DIR))
    }

    /// Returns `true` if the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Opens a fresh TCP connection and returns the server's `INFO` line
    /// (e.g. `INFO {"server_id":...}`, without the trailing CRLF).
    ///
    /// # Errors
    ///
    /// If connecting fails or no `INFO` line arrives within a second.
    pub fn info(&self) -> io::Result<String> {
        read_info(self.addr())
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    ///
    /// Idempotent. The port stays reserved and the temp dir (including the
    /// JetStream store) is kept so that [`restart`](Self::restart) can reuse
    /// them.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM, sent with `nats-server --signal term=<pid>`) and
    /// waits for it to exit; kills it if it has not exited after 10 seconds.
    ///
    /// Unlike [`stop`](Self::stop), the server writes out its JetStream store first: nats-server
    /// acknowledges a publish before its store reaches the file, so a SIGKILL can lose what a
    /// single server acknowledged in its last moments. Idempotent; keeps the port and the store
    /// for [`restart`](Self::restart).
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let signalled = Command::new(nats_server_binary())
            .arg("--signal")
            .arg(format!("term={}", child.id()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while signalled && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server (if running) and starts it again on the same port
    /// with the same options, waiting until it is ready.
    ///
    /// # Panics
    ///
    /// If the server cannot be restarted or does not become ready in time.
    pub fn restart(&mut self) {
        self.stop();
        self.launch_on_fixed_port();
    }

    /// Launches on `self.port`, retrying for a while if the port is in use
    /// (e.g. not yet released by a previous process); panics on failure.
    fn launch_on_fixed_port(&mut self) {
        let mut last_log = String::new();
        for attempt in 0..FIXED_PORT_ATTEMPTS {
            if attempt > 0 {
                thread::sleep(FIXED_PORT_RETRY_DELAY);
            }
            match self.launch() {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(LaunchError::AddrInUse(log)) => last_log = log,
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "test-support: nats-server could not bind 127.0.0.1:{} after {FIXED_PORT_ATTEMPTS} \
             attempts: address in use; last log:\n{last_log}",
            self.port
        );
    }

    /// Command-line arguments for the current port and options.
    fn command_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "--ports_file_dir".into(),
            self.dir.path.join(PORTS_DIR).display().to_string(),
        ];
        if self.config_file {
            args.push("-c".into());
            args.push(self.dir.path.join(CONFIG_FILE).display().to_string());
        }
        if self.opts.jetstream {
            args.push("-js".into());
            args.push("-sd".into());
            args.push(self.dir.path.join(JETSTREAM_DIR).display().to_string());
        }
        if let Some((user, password)) = &self.opts.user_password {
            args.push("--user".into());
            args.push(user.clone());
            args.push("--pass".into());
            args.push(password.clone());
        }
        if let Some(token) = &self.opts.token {
            args.push("--auth".into());
            args.push(token.clone());
        }
        args.extend(self.opts.args.iter().cloned());
        args
    }

    /// Spawns the process on `self.port` and waits until it is ready.
    /// On error the process has been killed and reaped.
    fn launch(&self) -> Result<Child, LaunchError> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| {
                LaunchError::Failed(format!(
                    "test-support: cannot open nats-server log file {}: {e}",
                    log_path.display()
                ))
            })?;
        // Only look at this launch's part of the log (it accumulates across restarts).
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr = log.try_clone().map_err(|e| {
            LaunchError::Failed(format!("test-support: cannot clone log file handle: {e}"))
        })?;

        // The server writes `<exe>_<pid>.ports` once it listens; clear stale
        // files from earlier launches so only this process's file counts.
        let ports_dir = self.dir.path.join(PORTS_DIR);
        if let Ok(entries) = fs::read_dir(&ports_dir) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }

        let args = self.command_args();
        let mut child = Command::new(&self.bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                LaunchError::Failed(format!(
                    "test-support: failed to spawn nats-server binary {:?}: {e}\n\
                     Install nats-server, put it on PATH, or set {NATS_SERVER_BIN_ENV} to its path.",
                    self.bin
                ))
            })?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let log = read_log(&log_path, log_offset);
                    if log.contains("address already in use") {
                        return Err(LaunchError::AddrInUse(log));
                    }
                    return Err(LaunchError::Failed(format!(
                        "test-support: nats-server exited early ({status}); command: {:?} {args:?}\n\
                         --- nats-server log ({}) ---\n{log}",
                        self.bin,
                        log_path.display()
                    )));
                }
                Err(e) => {
                    kill_and_reap(&mut child);
                    return Err(LaunchError::Failed(format!(
                        "test-support: cannot poll nats-server process: {e}"
                    )));
                }
            }

            if let Ok(info) = read_info(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))) {
                // Make sure the INFO came from *our* process and not from some
                // other server that holds the port (our process will then
                // exit with "address already in use" and be retried): either
                // our process wrote its ports file (so it owns the listener),
                // or its log names the server id from the INFO.
                if ports_file_written(&ports_dir, child.id())
                    || info_matches_log(&info, &read_log(&log_path, log_offset))
                {
                    return Ok(child);
                }
            }

            if Instant::now() >= deadline {
                kill_and_reap(&mut child);
                return Err(LaunchError::Failed(format!(
                    "test-support: nats-server did not become ready on 127.0.0.1:{} within {:?}; \
                     command: {:?} {args:?}\n--- nats-server log ({}) ---\n{}",
                    self.port,
                    READY_TIMEOUT,
                    self.bin,
                    log_path.display(),
                    read_log(&log_path, 0)
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        if self.port_allocated {
            release_port(self.port);
        }
        // `self.dir` is removed by its own Drop after this.
    }
}

/// Why a single launch attempt failed.
enum LaunchError {
    /// The server exited because the port was taken; carries the log.
    AddrInUse(String),
    /// Any other failure; carries the full panic message.
    Failed(String),
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the log file from byte `offset` on, lossily; empty on error.
fn read_log(path: &Path, offset: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(_) => String::new(),
    }
}

/// Connects to `addr` and returns the first line starting with `INFO`.
fn read_info(addr: SocketAddr) -> io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, PROBE_CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    for _ in 0..4 {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if line.starts_with("INFO") {
            return Ok(line.trim_end().to_owned());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("no INFO line received from {addr}"),
    ))
}

/// Whether the process with `pid` has written its ports file
/// (`<exe>_<pid>.ports`) into `dir`, which it does once it is listening.
fn ports_file_written(dir: &Path, pid: u32) -> bool {
    let suffix = format!("_{pid}.ports");
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.file_name().to_string_lossy().ends_with(&suffix))
    })
}

/// Whether the `INFO` line's `server_id` appears in `log` (nats-server logs
/// its `ID:` at startup, before it starts listening).
fn info_matches_log(info: &str, log: &str) -> bool {
    json_string_field(info, "server_id").is_some_and(|id| log.contains(id))
}

/// Extracts a string field from NATS's compact INFO JSON without a JSON parser.
fn json_string_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

/// Ports handed out by [`pick_free_port`] and still owned by a live
/// [`NatsServer`] in this process, so parallel tests never get the same one.
static ALLOCATED_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Picks a currently free loopback port (bind `127.0.0.1:0`, read, drop) that
/// is not 4222 and not already handed out in this process, and records it.
fn pick_free_port() -> u16 {
    let mut last_err = None;
    for _ in 0..100 {
        let port = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
            Ok(addr) => addr.port(),
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        if port == DEFAULT_NATS_PORT {
            continue;
        }
        let mut allocated = ALLOCATED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if !allocated.contains(&port) {
            allocated.push(port);
            return port;
        }
    }
    panic!("test-support: cannot find a free loopback port (last error: {last_err:?})");
}

fn release_port(port: u16) {
    let mut allocated = ALLOCATED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    allocated.retain(|&p| p != port);
}

/// A uniquely named directory under [`std::env::temp_dir`], removed on drop.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let mut last_err = None;
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = base.join(format!(
                "test-support-nats-{}-{n}-{nanos}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("cannot create a unique temp dir")))
    }
}

impl TempDir {
    /// A directory named `name` inside `parent` (removed on drop, and with `parent`).
    #[cfg(feature = "tls")]
    fn inside(parent: &Path, name: &str) -> io::Result<TempDir> {
        let path = parent.join(name);
        fs::create_dir(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_extraction() {
        let info = r#"INFO {"server_id":"NABC","server_name":"x","max_payload":1048576}"#;
        assert_eq!(json_string_field(info, "server_id"), Some("NABC"));
        assert_eq!(json_string_field(info, "server_name"), Some("x"));
        assert_eq!(json_string_field(info, "missing"), None);
    }

    #[test]
    fn info_must_match_our_log() {
        let info = r#"INFO {"server_id":"NOURS"}"#;
        assert!(info_matches_log(info, "[1] [INF]   ID:       NOURS\n"));
        assert!(!info_matches_log(info, "[1] [INF]   ID:       NTHEIRS\n"));
        assert!(!info_matches_log(info, ""));
        assert!(!info_matches_log("INFO {}", "ID: NOURS"));
    }

    #[test]
    fn picked_ports_are_unique_and_never_4222() {
        let ports: Vec<u16> = (0..20).map(|_| pick_free_port()).collect();
        for (i, p) in ports.iter().enumerate() {
            assert_ne!(*p, DEFAULT_NATS_PORT);
            assert!(!ports[i + 1..].contains(p), "duplicate port {p}");
        }
        for p in ports {
            release_port(p);
        }
    }

    #[test]
    fn temp_dirs_are_unique_and_removed() {
        let a = TempDir::new().unwrap();
        let b = TempDir::new().unwrap();
        assert_ne!(a.path, b.path);
        assert!(a.path.is_dir());
        let path = a.path.clone();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn binary_resolves_to_a_path() {
        // The environment is not mutated here (set_var is unsafe in
        // edition 2024 and racy across parallel tests).
        let bin = nats_server_binary();
        assert!(!bin.as_os_str().is_empty());
    }
}

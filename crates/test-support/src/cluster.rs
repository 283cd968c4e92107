//! [`NatsCluster`]: several `nats-server` processes routed together on loopback, each with
//! JetStream and its own store.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::{NatsServer, NatsServerOptions, pick_free_port, release_port};

/// How long a cluster may take to form (routes up, a JetStream meta leader elected).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Delay between two looks at the monitoring endpoints.
const FORM_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Connect and read timeout of one monitoring request.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(2);

/// The cluster name every member is started with.
pub const CLUSTER_NAME: &str = "happen-test";

/// A cluster of real `nats-server` processes on `127.0.0.1`: every member has JetStream with
/// its own store directory, a server name (`n1`, `n2`, ...), a route to every other member,
/// and a monitoring port the harness polls to know when the cluster is formed.
///
/// ```no_run
/// use test_support::NatsCluster;
///
/// let mut cluster = NatsCluster::start(); // 3 servers, formed, with a JetStream meta leader
/// let urls = cluster.urls(); // give all of them to a client
/// cluster.kill(0); // SIGKILL one member; its store and ports are kept
/// cluster.restart(0); // back on the same ports, waits until it rejoined
/// # let _ = urls;
/// // every member is killed and its temp dir removed when `cluster` is dropped
/// ```
///
/// Like [`NatsServer`], every method panics with a descriptive message (including the logs)
/// when the cluster cannot be started or does not form in time: this type is meant for tests.
pub struct NatsCluster {
    servers: Vec<NatsServer>,
    /// Route (cluster) port of each member.
    route_ports: Vec<u16>,
    /// HTTP monitoring port of each member.
    monitor_ports: Vec<u16>,
}

impl fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCluster")
            .field("servers", &self.servers)
            .field("route_ports", &self.route_ports)
            .field("monitor_ports", &self.monitor_ports)
            .finish()
    }
}

impl NatsCluster {
    /// Starts a 3-server cluster and waits until it is formed (see
    /// [`wait_formed`](NatsCluster::wait_formed)).
    ///
    /// # Panics
    ///
    /// If a server cannot be started or the cluster does not form within a minute.
    pub fn start() -> NatsCluster {
        Self::start_with_size(3)
    }

    /// Starts a cluster of `size` servers (at least 1) and waits until it is formed.
    ///
    /// # Panics
    ///
    /// If `size` is 0, a server cannot be started or the cluster does not form within a minute.
    pub fn start_with_size(size: usize) -> NatsCluster {
        assert!(
            size > 0,
            "test-support: a cluster needs at least one server"
        );
        let route_ports: Vec<u16> = (0..size).map(|_| pick_free_port()).collect();
        let monitor_ports: Vec<u16> = (0..size).map(|_| pick_free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster {
            servers: Vec::with_capacity(size),
            route_ports,
            monitor_ports,
        };
        for i in 0..size {
            let opts = NatsServerOptions::new().with_jetstream().with_args([
                "--server_name".to_owned(),
                server_name(i),
                "--cluster_name".to_owned(),
                CLUSTER_NAME.to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{}", cluster.route_ports[i]),
                "--routes".to_owned(),
                routes.clone(),
                "-m".to_owned(),
                cluster.monitor_ports[i].to_string(),
            ]);
            // pushed one by one so a panic drops (kills) the members already started
            cluster.servers.push(NatsServer::start_with(opts));
        }
        cluster.wait_formed();
        cluster
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Always `false`: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Client URLs of every member (`nats://127.0.0.1:<port>`), in member order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// Member `i`.
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// Member `i`, mutably (e.g. for [`NatsServer::is_running`]).
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn server_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.servers[i]
    }

    /// The server name of member `i` (`n1`, `n2`, ...), as in the server's `INFO` and in
    /// JetStream's cluster reports.
    pub fn server_name(&self, i: usize) -> String {
        server_name(i)
    }

    /// The index of the member whose client port is `port`, if any.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.servers.iter().position(|s| s.port() == port)
    }

    /// The HTTP monitoring port of member `i` (`/varz`, `/routez`, `/jsz`, ...).
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.monitor_ports[i]
    }

    /// `GET path` on member `i`'s monitoring port; the response body.
    ///
    /// # Errors
    ///
    /// If the member does not answer (e.g. it is stopped) or answers with a non-200 status.
    pub fn monitor(&self, i: usize, path: &str) -> io::Result<String> {
        http_get(self.monitor_ports[i], path)
    }

    /// The JetStream meta leader's server name as member `i` sees it, if it knows one.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        let jsz = self.monitor(i, "/jsz").ok()?;
        let meta = &jsz[jsz.find("\"meta_cluster\"")?..];
        json_field(meta, "leader")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit. Its ports and JetStream store are
    /// kept for [`restart`](NatsCluster::restart). Idempotent.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].stop();
    }

    /// Restarts member `i` (killing it first if it runs) on the same ports with the same
    /// store, and waits until the cluster is formed again with it.
    ///
    /// # Panics
    ///
    /// If the server cannot be restarted or the cluster does not form again within a minute.
    pub fn restart(&mut self, i: usize) {
        self.servers[i].restart();
        self.wait_formed();
    }

    /// Waits until the running members form a cluster: each has a route to every other
    /// running member (`/routez`) and knows a JetStream meta leader (`/jsz`). Polls the
    /// monitoring endpoints; returns at once when that already holds.
    ///
    /// # Panics
    ///
    /// If that does not hold within a minute (with every member's view and log).
    pub fn wait_formed(&mut self) {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let running: Vec<usize> = (0..self.servers.len())
                .filter(|&i| self.servers[i].is_running())
                .collect();
            let formed = running.iter().all(|&i| {
                let routes = self
                    .monitor(i, "/routez")
                    .ok()
                    .and_then(|r| json_number(&r, "num_routes"));
                routes == Some(running.len() as u64 - 1) && self.meta_leader(i).is_some()
            });
            if formed {
                return;
            }
            if Instant::now() >= deadline {
                let mut report = String::new();
                for i in 0..self.servers.len() {
                    report.push_str(&format!(
                        "--- {} (running: {}) routez: {:?} meta leader: {:?}\n--- log:\n{}\n",
                        server_name(i),
                        running.contains(&i),
                        self.monitor(i, "/routez")
                            .ok()
                            .and_then(|r| json_number(&r, "num_routes")),
                        self.meta_leader(i),
                        self.servers[i].logs()
                    ));
                }
                panic!(
                    "test-support: the nats cluster did not form within {FORM_TIMEOUT:?}\n{report}"
                );
            }
            thread::sleep(FORM_POLL_INTERVAL);
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // the members kill themselves and remove their dirs in their own Drop
        for p in self.route_ports.iter().chain(&self.monitor_ports) {
            release_port(*p);
        }
    }
}

/// The server name of member `i`.
fn server_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// A minimal HTTP/1.0 GET on `127.0.0.1:port`; the body of a 200 response.
fn http_get(port: u16, path: &str) -> io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, MONITOR_TIMEOUT)?;
    stream.set_read_timeout(Some(MONITOR_TIMEOUT))?;
    stream.set_write_timeout(Some(MONITOR_TIMEOUT))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP header end"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(io::Error::other(format!("GET {path}: {status}")));
    }
    Ok(body.to_owned())
}

/// The raw text after `"key":` (whitespace skipped), in a JSON document without a parser.
fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\"");
    let at = json.find(&pattern)? + pattern.len();
    json[at..]
        .trim_start()
        .strip_prefix(':')
        .map(str::trim_start)
}

/// A string field (`"key": "value"`, no escapes).
fn json_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let rest = json_value(json, key)?.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

/// A number field (`"key": 12`).
fn json_number(json: &str, key: &str) -> Option<u64> {
    let rest = json_value(json, key)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fields_are_found_in_pretty_json() {
        let jsz = "{\n  \"meta_cluster\": {\n    \"name\": \"c\",\n    \"leader\": \"n2\"\n  }\n}";
        assert_eq!(json_field(jsz, "leader"), Some("n2"));
        assert_eq!(json_field(jsz, "missing"), None);
        assert_eq!(json_number("{\"num_routes\": 2,", "num_routes"), Some(2));
        assert_eq!(json_number("{\"num_routes\":0}", "num_routes"), Some(0));
        assert_eq!(json_number("{\"num_routes\": \"x\"}", "num_routes"), None);
    }
}

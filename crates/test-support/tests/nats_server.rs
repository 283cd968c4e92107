//! Integration tests for [`test_support::NatsServer`] against a real
//! `nats-server` binary.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use test_support::{NatsServer, NatsServerOptions};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Connects with a plain `TcpStream` and returns the INFO line.
fn raw_info(port: u16) -> String {
    let stream = connect(port).expect("connect to nats-server");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read INFO line");
    assert!(line.starts_with("INFO "), "unexpected first line: {line:?}");
    assert!(
        line.ends_with("\r\n"),
        "INFO line not CRLF terminated: {line:?}"
    );
    line
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// Performs a NATS handshake with the given CONNECT JSON and returns the
/// server's reply to `PING` (`PONG` on success, `-ERR ...` otherwise).
fn handshake(port: u16, connect_json: &str) -> String {
    let mut stream = connect(port).expect("connect to nats-server");
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "unexpected first line: {line:?}");
    write!(stream, "CONNECT {connect_json}\r\nPING\r\n").unwrap();
    stream.flush().unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

fn server_id(info: &str) -> String {
    let key = "\"server_id\":\"";
    let start = info.find(key).expect("server_id in INFO") + key.len();
    let len = info[start..].find('"').unwrap();
    info[start..start + len].to_owned()
}

#[test]
fn start_and_read_info() {
    let server = NatsServer::start();
    assert_ne!(server.port(), 4222);
    assert_ne!(server.port(), 0);
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_eq!(
        server.addr(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()))
    );

    let info = raw_info(server.port());
    assert!(
        info.contains(&format!("\"port\":{}", server.port())),
        "{info}"
    );
    assert!(!info.contains("\"auth_required\":true"), "{info}");
    assert_eq!(handshake(server.port(), r#"{"verbose":false}"#), "PONG");

    let via_helper = server.info().unwrap();
    assert_eq!(server_id(&via_helper), server_id(&info));
    assert!(server.pid().is_some());
    assert!(
        server.logs().contains("Server is ready"),
        "{}",
        server.logs()
    );
}

#[test]
fn two_servers_in_parallel_get_distinct_ports() {
    let a = thread::spawn(NatsServer::start);
    let b = thread::spawn(NatsServer::start);
    let a = a.join().unwrap();
    let b = b.join().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(
        server_id(&raw_info(a.port())),
        server_id(&raw_info(b.port()))
    );
    assert_ne!(a.log_path(), b.log_path());
}

#[test]
fn stop_then_connect_fails() {
    let mut server = NatsServer::start();
    raw_info(server.port());
    assert!(server.is_running());

    server.stop();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    assert!(
        connect(server.port()).is_err(),
        "server still accepting after stop()"
    );

    // Idempotent.
    server.stop();
    assert!(connect(server.port()).is_err());
}

#[test]
fn restart_on_same_port() {
    let mut server = NatsServer::start();
    let port = server.port();
    let first_id = server_id(&raw_info(port));

    server.restart();
    assert_eq!(server.port(), port);
    assert!(server.is_running());
    let second_id = server_id(&raw_info(port));
    assert_ne!(first_id, second_id, "expected a new server process");
    assert_eq!(handshake(port, r#"{"verbose":false}"#), "PONG");

    // Stop, check it's down, restart again (the reconnect-test pattern).
    server.stop();
    assert!(connect(port).is_err());
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(handshake(port, r#"{"verbose":false}"#), "PONG");
}

#[test]
fn fixed_port() {
    let port = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = NatsServer::start_with(NatsServerOptions::new().with_port(port));
    assert_eq!(server.port(), port);
    assert!(raw_info(port).contains(&format!("\"port\":{port}")));
}

#[test]
fn jetstream_enabled() {
    let mut server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let info = raw_info(server.port());
    assert!(info.contains("\"jetstream\":true"), "{info}");
    let store = server.jetstream_store_dir().expect("store dir");
    assert!(store.is_dir());

    server.restart();
    assert!(raw_info(server.port()).contains("\"jetstream\":true"));
    assert!(store.is_dir(), "store dir must survive restart");

    let plain = NatsServer::start();
    assert!(!raw_info(plain.port()).contains("\"jetstream\":true"));
    assert_eq!(plain.jetstream_store_dir(), None);
}

#[test]
fn max_payload() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_max_payload(12_345));
    assert!(raw_info(server.port()).contains("\"max_payload\":12345"));

    // Larger than the default max_pending (64 MiB) must still start.
    let big = NatsServer::start_with(NatsServerOptions::new().with_max_payload(100 * 1024 * 1024));
    assert!(raw_info(big.port()).contains(&format!("\"max_payload\":{}", 100 * 1024 * 1024)));
}

#[test]
fn user_password_auth() {
    let server =
        NatsServer::start_with(NatsServerOptions::new().with_user_password("alice", "s3cr3t"));
    let port = server.port();
    assert!(raw_info(port).contains("\"auth_required\":true"));
    assert_eq!(
        handshake(port, r#"{"verbose":false,"user":"alice","pass":"s3cr3t"}"#),
        "PONG"
    );
    let denied = handshake(port, r#"{"verbose":false,"user":"alice","pass":"wrong"}"#);
    assert!(denied.starts_with("-ERR"), "{denied}");
}

#[test]
fn token_auth() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_token("t0k3n"));
    let port = server.port();
    assert!(raw_info(port).contains("\"auth_required\":true"));
    assert_eq!(
        handshake(port, r#"{"verbose":false,"auth_token":"t0k3n"}"#),
        "PONG"
    );
    let denied = handshake(port, r#"{"verbose":false,"auth_token":"nope"}"#);
    assert!(denied.starts_with("-ERR"), "{denied}");
}

#[test]
fn extra_args() {
    let server = NatsServer::start_with(
        NatsServerOptions::new().with_args(["--server_name", "test-support-extra"]),
    );
    let info = raw_info(server.port());
    assert!(
        info.contains("\"server_name\":\"test-support-extra\""),
        "{info}"
    );
}

#[test]
fn drop_kills_server_and_removes_temp_dir() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let port = server.port();
    let dir = server.log_path().parent().unwrap().to_path_buf();
    assert!(dir.is_dir());
    drop(server);
    assert!(!dir.exists(), "temp dir {} not removed", dir.display());
    assert!(connect(port).is_err(), "server still accepting after drop");
}

#[test]
#[should_panic(expected = "nats-server exited early")]
fn bad_arguments_panic_with_log() {
    let _server = NatsServer::start_with(NatsServerOptions::new().with_arg("--no-such-flag"));
}

#[test]
#[should_panic(expected = "address in use")]
fn occupied_fixed_port_is_not_mistaken_for_ours() {
    // Another server already owns the port: its INFO must not be accepted as
    // ours (server ids differ), so start_with retries and finally panics.
    let existing = NatsServer::start();
    let _second = NatsServer::start_with(NatsServerOptions::new().with_port(existing.port()));
}

#[test]
fn log_redirected_by_extra_args_still_starts() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_args(["-l", "/dev/null"]));
    raw_info(server.port());
    assert!(!server.logs().contains("Server is ready"));
}

#[cfg(feature = "tls")]
#[test]
fn tls_server_requires_tls_and_hands_out_its_ca() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_tls());
    let info = raw_info(server.port());
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let ca = server.ca_file().expect("a TLS server has a CA file");
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let other = test_support::TestCa::new("another CA");
    let other_pem = std::fs::read_to_string(other.ca_file()).unwrap();
    assert_ne!(pem, other_pem);
    drop(server);
    assert!(!ca.exists(), "the CA is removed with the server");
}

#[test]
fn plain_server_has_no_ca() {
    let server = NatsServer::start();
    assert_eq!(server.ca_file(), None);
}

#[test]
fn nkey_auth() {
    let user = test_support::NkeyUser::generate();
    assert!(user.public_key().starts_with('U'), "{}", user.public_key());
    assert!(user.seed().starts_with("SU"));
    assert!(
        !format!("{user:?}").contains(user.seed()),
        "Debug shows the seed"
    );
    let server = NatsServer::start_with(NatsServerOptions::new().with_nkey_user(user.public_key()));
    let info = raw_info(server.port());
    assert!(info.contains("\"auth_required\":true"), "{info}");
    assert!(info.contains("\"nonce\""), "{info}");
    let denied = handshake(server.port(), r#"{"verbose":false}"#);
    assert!(denied.starts_with("-ERR"), "{denied}");
}

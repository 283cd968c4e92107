//! Helpers shared by the integration tests: a happen instance on the NATS transport.
#![allow(dead_code, unreachable_pub)]

use std::future::IntoFuture;
use std::time::Duration;

use happen::Happen;
use happen_nats::{NatsConfig, NatsTransport};

/// A happen instance connected to `url`, with its transport handle (for stats).
pub async fn instance(url: &str) -> (Happen, NatsTransport) {
    instance_with(NatsConfig::with_server(url)).await
}

/// As [`instance`] with explicit transport settings.
pub async fn instance_with(config: NatsConfig) -> (Happen, NatsTransport) {
    let transport = NatsTransport::connect(config)
        .await
        .expect("connect to nats");
    let happen = Happen::builder()
        .transport(transport.clone())
        .build()
        .expect("build happen");
    (happen, transport)
}

/// Awaits `f` for at most `secs` seconds, panicking with `what` on timeout.
pub async fn within<T>(secs: u64, what: &str, f: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// A round trip through the server on `client`'s connection: everything the client sent
/// before (a subscription, a publish) has been processed by the server when it returns.
/// async-nats' `flush` only writes the bytes out, so a subscription "flushed" may not be
/// registered yet when another connection publishes. A request nobody answers comes back as
/// "no responders", after the server processed what came before it on this connection.
pub async fn round_trip(client: &async_nats::Client) {
    let probe = client.new_inbox();
    let answer = within(
        10,
        "a round trip through the server",
        client.request(probe, bytes::Bytes::new()),
    )
    .await;
    if let Err(e) = answer {
        assert_eq!(
            e.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "the round trip failed: {e}"
        );
    }
}

//! NATS's own auth is the outer wall: a process's nkey user confined to its nodes' subjects
//! cannot publish to another node's subject (the request fails at once with `Auth`), while its
//! own nodes work — and the same nkey signs its node's events.

mod common;

use std::time::Duration;

use common::{instance_with, within};
use happen::security::{Security, SecurityMode, SigningKey, TrustRing};
use happen::{Context, ErrorKind, Event, NodeOptions};
use happen_nats::NatsConfig;
use serde_json::json;
use test_support::{NatsServer, NatsServerOptions, NkeyUser, UserPermissions};

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_user_reaches_only_its_subjects_and_signs_with_its_nkey() {
    let shop_user = NkeyUser::generate();
    let back_user = NkeyUser::generate();
    // the shop process: its node `shop`, requests to `billing` only; replies on inboxes
    let confined = UserPermissions {
        publish: strings(&[
            "happen.node.billing",
            "happen.broadcast",
            "happen.pressure.shop",
            "happen.discover",
            "_INBOX.>",
        ]),
        subscribe: strings(&[
            "happen.node.shop",
            "happen.broadcast",
            "happen.pressure.>",
            "happen.discover",
            "happen.bstream.>",
            "_INBOX.>",
        ]),
    };
    let server = NatsServer::start_with(
        NatsServerOptions::new()
            .with_nkey_user_permissions(shop_user.public_key(), confined)
            .with_nkey_user(back_user.public_key()),
    );
    let config = |user: &NkeyUser| {
        let mut c = NatsConfig::with_server(server.url());
        c.auth.nkey = Some(user.seed().to_owned());
        c.request_timeout = Some(Duration::from_secs(20));
        c
    };
    let (shop_process, _) = instance_with(config(&shop_user)).await;
    let (back_process, _) = instance_with(config(&back_user)).await;

    // the shop node signs with its NATS user's nkey; billing trusts that key for `shop`
    let shop_key = SigningKey::from_seed(shop_user.seed()).unwrap();
    assert_eq!(shop_key.public_key(), shop_user.public_key());
    let shop = shop_process
        .node_with(
            "shop",
            NodeOptions::new().security(Security::new().signing_key(shop_key)),
        )
        .await
        .unwrap();
    shop.on("price", |_e: Event, _c: Context| async { json!(9.5) })
        .unwrap();
    let ring = TrustRing::new()
        .trust("shop", shop_user.public_key())
        .unwrap();
    let billing = back_process
        .node_with(
            "billing",
            NodeOptions::new().security(Security::new().trust(ring).mode(SecurityMode::Enforce)),
        )
        .await
        .unwrap();
    billing
        .on("invoice", |e: Event, _c: Context| async move {
            json!({"signed_by": e.integrity().and_then(|i| i.public_key()).map(str::to_owned)})
        })
        .unwrap();
    let admin = back_process.node("admin").await.unwrap();
    admin
        .on("wipe", |_e: Event, _c: Context| async { "wiped" })
        .unwrap();

    // its own subjects work: a request out to billing, a request in to shop
    let seen = within(
        10,
        "shop → billing",
        shop.send("billing", Event::new("invoice", ())),
    )
    .await
    .unwrap();
    assert_eq!(seen["signed_by"], shop_user.public_key());
    let price = within(
        10,
        "billing → shop",
        billing.send("shop", Event::new("price", ())),
    )
    .await
    .unwrap();
    assert_eq!(price, json!(9.5));

    // another node's subject: refused by the server, answered at once (not a timeout)
    let started = tokio::time::Instant::now();
    let err = within(
        10,
        "shop → admin",
        shop.send("admin", Event::new("wipe", ())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.message().contains("happen.node.admin"), "{err}");
    assert!(err.message().contains("permissions.publish"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast, not by the 20 s timeout"
    );
    assert_eq!(admin.stats().accepted, 0);

    // the connection stays usable for what is allowed
    let seen = within(
        10,
        "shop → billing again",
        shop.send("billing", Event::new("invoice", ())),
    )
    .await
    .unwrap();
    assert_eq!(seen["signed_by"], shop_user.public_key());
}

//! Integration tests for [`test_support::NatsCluster`]: three real `nats-server` processes.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use test_support::{CLUSTER_NAME, NatsCluster, NatsServer, NatsServerOptions};
use tokio::time::{Instant, sleep};

/// Generous: a loaded 2-core machine elects stream leaders slowly.
const DEADLINE: Duration = Duration::from_secs(60);

/// Publishes `n` messages to `subject`, each acknowledged by the stream; an attempt that fails
/// (no stream leader yet, a reconnect in progress) is retried until `DEADLINE`.
async fn publish_acked(js: &jetstream::Context, subject: &str, from: u64, n: u64) {
    let deadline = Instant::now() + DEADLINE;
    for i in from..from + n {
        loop {
            let attempt = async {
                js.publish(subject.to_owned(), i.to_string().into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(_ack)) => break,
                Ok(Err(e)) if Instant::now() < deadline => eprintln!("retrying publish {i}: {e}"),
                Err(_) if Instant::now() < deadline => eprintln!("retrying publish {i}: timeout"),
                other => panic!("publish {i} never acknowledged: {other:?}"),
            }
            sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The stream's info, retried while no leader answers.
async fn stream_info(js: &jetstream::Context, name: &str) -> stream::Info {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let attempt = async {
            let mut s = js.get_stream(name).await.map_err(|e| e.to_string())?;
            s.info().await.cloned().map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(info)) => return info,
            other if Instant::now() < deadline => eprintln!("retrying stream info: {other:?}"),
            other => panic!("no stream info within {DEADLINE:?}: {other:?}"),
        }
        sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_cluster_forms_with_routes_and_a_meta_leader() {
    let cluster = NatsCluster::start();
    assert_eq!(cluster.len(), 3);
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(*url, cluster.server(i).url());
        let info = cluster.server(i).info().unwrap();
        assert!(
            info.contains(&format!("\"server_name\":\"{}\"", cluster.server_name(i))),
            "{info}"
        );
        assert!(
            info.contains(&format!("\"cluster\":\"{CLUSTER_NAME}\"")),
            "{info}"
        );
        let routez = cluster.monitor(i, "/routez").unwrap();
        assert!(routez.contains("\"num_routes\": 2"), "{routez}");
    }
    // every member agrees on the meta leader
    let leaders: Vec<Option<String>> = (0..3).map(|i| cluster.meta_leader(i)).collect();
    assert!(leaders[0].is_some(), "{leaders:?}");
    assert!(leaders.iter().all(|l| *l == leaders[0]), "{leaders:?}");
    let ports: Vec<u16> = (0..3).map(|i| cluster.server(i).port()).collect();
    assert_eq!(cluster.index_of_port(ports[2]), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_stream_survives_a_killed_member_and_the_member_rejoins() {
    let mut cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(cluster.urls())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "CLUSTERED".to_owned(),
        subjects: vec!["clustered.>".to_owned()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    publish_acked(&js, "clustered.a", 0, 100).await;
    let info = stream_info(&js, "CLUSTERED").await;
    assert_eq!(info.state.messages, 100);
    let replicas = info.cluster.as_ref().unwrap().replicas.len();
    assert_eq!(
        replicas, 2,
        "a leader and two followers: {:?}",
        info.cluster
    );

    // kill the member the client is connected to: the client moves, the stream stays
    let port = client.server_info().port;
    let victim = cluster.index_of_port(port).expect("connected to a member");
    cluster.kill(victim);
    assert!(!cluster.server_mut(victim).is_running());
    publish_acked(&js, "clustered.b", 100, 100).await;
    let info = stream_info(&js, "CLUSTERED").await;
    assert_eq!(info.state.messages, 200);
    assert_ne!(
        client.server_info().port,
        port,
        "the client moved to another member"
    );

    // the member comes back and catches up: every replica current, none offline
    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(victim);
        cluster
    })
    .await
    .unwrap();
    assert!(cluster.server_mut(victim).is_running());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let info = stream_info(&js, "CLUSTERED").await;
        let c = info.cluster.clone().unwrap();
        let all_current =
            c.replicas.len() == 2 && c.replicas.iter().all(|p| p.current && !p.offline);
        if all_current && info.state.messages == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member did not catch up: {c:?}, {} messages",
            info.state.messages
        );
        sleep(Duration::from_millis(100)).await;
    }
    // and the stream takes writes with all three members again
    publish_acked(&js, "clustered.c", 200, 10).await;
    assert_eq!(stream_info(&js, "CLUSTERED").await.state.messages, 210);
    drop(client);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_keeps_its_jetstream_store_across_a_restart() {
    let mut server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let store = server.jetstream_store_dir().expect("a store dir");
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "KEPT".to_owned(),
        subjects: vec!["kept.>".to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    publish_acked(&js, "kept.a", 0, 10).await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    assert_eq!(server.jetstream_store_dir(), Some(store.clone()));
    assert!(store.is_dir());
    // the client reconnects on its own; the stream and its messages are still there
    assert_eq!(stream_info(&js, "KEPT").await.state.messages, 10);
    drop(client);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    assert!(!store.exists(), "the store is removed with the server");
}

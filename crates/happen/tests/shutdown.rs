//! Shutdown: drains within the deadline, then cancels; new events get `ShutDown`.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::timeout;

mod support;
use support::wait_until;

const T: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn running_and_queued_flows_finish_within_the_deadline() {
    let happen = Happen::new();
    let node = happen
        .node_with("n", NodeOptions::new().max_concurrent(1))
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    node.on("work", move |e: Event, _c: Context| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
            e.payload().clone()
        }
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    let replies: Vec<_> = (0..5)
        .map(|i| client.send(&node, Event::new("work", i)).into_future())
        .collect();
    wait_until("one running", || node.stats().active == 1).await;

    let h = happen.clone();
    let shutdown = tokio::spawn(async move { h.shutdown(Duration::from_secs(10)).await });
    wait_until("admission to close", || {
        happen.find_node("n").is_some() && node.tell(&node, Event::new("work", 99)).is_err()
    })
    .await;
    let err = node.tell(&node, Event::new("work", 100)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown);
    assert!(!shutdown.is_finished());

    gate.add_permits(5);
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for (i, r) in out.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i), "flow {i} drained");
    }
    timeout(T, shutdown).await.unwrap().unwrap();
    assert!(happen.find_node("n").is_none());
}

#[tokio::test(start_paused = true)]
async fn after_the_deadline_flows_are_cancelled_and_senders_told() {
    let happen = Happen::new();
    let node = happen
        .node_with("n", NodeOptions::new().max_concurrent(2))
        .await
        .unwrap();
    let cleaned_up = Arc::new(AtomicBool::new(false));
    let c = cleaned_up.clone();
    node.on("hang", move |_e: Event, _c: Context| {
        let c = c.clone();
        async move {
            struct Guard(Arc<AtomicBool>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _g = Guard(c);
            std::future::pending::<()>().await;
        }
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    let replies: Vec<_> = (0..5)
        .map(|_| client.send(&node, Event::new("hang", ())).into_future())
        .collect();
    wait_until("two running", || node.stats().active == 2).await;

    let start = tokio::time::Instant::now();
    timeout(T, happen.shutdown(Duration::from_secs(1)))
        .await
        .expect("shutdown returns after its deadline");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(
        cleaned_up.load(Ordering::SeqCst),
        "the cancelled flow's guards ran"
    );
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for r in out {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ShutDown, "{e:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_of_an_idle_instance_is_immediate() {
    let happen = Happen::new();
    let _a = happen.node("a").await.unwrap();
    let _b = happen.node("b").await.unwrap();
    let start = tokio::time::Instant::now();
    timeout(T, happen.shutdown(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        happen.node("c").await.unwrap_err().kind(),
        ErrorKind::ShutDown
    );
}

/// A shutdown reports what it gave up: every flow still running or queued when the grace
/// period ended is counted, cancelled and answered `ShutDown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_the_flows_cancelled_at_the_deadline() {
    let happen = Happen::new();
    let node = happen
        .node_with("stuck", NodeOptions::new().max_concurrent(10))
        .await
        .unwrap();
    node.on("wait", |_e: Event, _c: Context| async {
        futures::future::pending::<()>().await
    })
    .unwrap();
    let replies: Vec<_> = (0..1_000)
        .map(|i| node.send(&node, Event::new("wait", i)))
        .collect();
    wait_until("ten running", || node.stats().active == 10).await;
    assert_eq!(node.stats().queued, 990);
    let grace = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let report = happen.shutdown(grace).await;
    let took = started.elapsed();
    assert!(took >= grace, "returned before the grace period: {took:?}");
    assert!(took < grace + Duration::from_millis(500), "took {took:?}");
    assert_eq!(report.cancelled_flows, 1_000, "{report:?}");
    assert!(!report.is_clean());
    for reply in replies {
        let err = timeout(T, reply).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ShutDown);
    }
}

/// A transport that never finishes detaching or shutting down (its server gone, or stopped)
/// cannot hold a shutdown past its grace period: the shutdown returns and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_that_never_finishes_cannot_hold_a_shutdown() {
    use futures::future::BoxFuture;
    use happen::NodeId;
    use happen::transport::{Inbox, LocalTransport, ReplySender, Transport};

    /// Routes in process, but detaching and shutting down hang forever.
    #[derive(Default)]
    struct Hanging(LocalTransport);
    impl Transport for Hanging {
        fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
            self.0.attach(inbox)
        }
        fn detach(&self, _node: &NodeId) -> BoxFuture<'_, ()> {
            Box::pin(futures::future::pending())
        }
        fn send(
            &self,
            target: &NodeId,
            event: Event,
            reply: Option<ReplySender>,
        ) -> happen::Result<()> {
            self.0.send(target, event, reply)
        }
        fn broadcast(&self, event: Event) -> happen::Result<()> {
            self.0.broadcast(event)
        }
        fn shutdown(&self) -> BoxFuture<'_, ()> {
            Box::pin(futures::future::pending())
        }
    }

    let happen = Happen::builder()
        .transport(Hanging::default())
        .build()
        .unwrap();
    let nodes = futures::future::try_join_all((0..3).map(|i| happen.node(format!("n{i}"))))
        .await
        .unwrap();
    nodes[0]
        .on("work", |_e: Event, _c: Context| async { "done" })
        .unwrap();
    assert_eq!(
        timeout(T, nodes[1].send("n0", Event::new("work", ())))
            .await
            .unwrap()
            .unwrap(),
        "done"
    );

    let grace = Duration::from_millis(400);
    let started = std::time::Instant::now();
    let report = timeout(T, happen.shutdown(grace))
        .await
        .expect("the shutdown returned");
    let took = started.elapsed();
    assert!(took < grace + Duration::from_millis(500), "took {took:?}");
    assert_eq!(report.undetached_nodes, 3, "{report:?}");
    assert!(report.transport_unfinished, "{report:?}");
    assert_eq!(report.cancelled_flows, 0, "{report:?}");

    // A node closed on its own keeps the same promise.
    let happen = Happen::builder()
        .transport(Hanging::default())
        .build()
        .unwrap();
    let node = happen.node("alone").await.unwrap();
    let started = std::time::Instant::now();
    let report = timeout(T, node.close(grace)).await.expect("close returned");
    assert!(started.elapsed() < grace + Duration::from_millis(500));
    assert_eq!(report.undetached_nodes, 1, "{report:?}");
}

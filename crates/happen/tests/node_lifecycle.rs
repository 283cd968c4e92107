//! Node lifecycle: creating a node is cancel-safe, a prepared node is attached only when it
//! starts, one node can be closed, and dropping the
//! last `Happen` handle shuts the instance down without leaking tasks.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use happen::transport::{Inbox, LocalTransport, ReplySender, Transport};
use happen::{Context, ErrorKind, Event, Happen, NodeId, NodeOptions};
use tokio::time::timeout;

mod support;
use support::wait_until;

const T: Duration = Duration::from_secs(30);

/// The in-process transport, except that attaching hangs while `hold` is set.
#[derive(Clone, Default)]
struct SlowAttach {
    inner: Arc<LocalTransport>,
    hold: Arc<AtomicBool>,
}

impl Transport for SlowAttach {
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
        if self.hold.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        self.inner.attach(inbox)
    }
    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
        self.inner.detach(node)
    }
    fn send(
        &self,
        target: &NodeId,
        event: Event,
        reply: Option<ReplySender>,
    ) -> happen::Result<()> {
        self.inner.send(target, event, reply)
    }
    fn broadcast(&self, event: Event) -> happen::Result<()> {
        self.inner.broadcast(event)
    }
}

#[tokio::test]
async fn dropping_node_creation_mid_attach_leaves_nothing_behind() {
    let transport = SlowAttach::default();
    let happen = Happen::builder()
        .transport(transport.clone())
        .build()
        .unwrap();
    transport.hold.store(true, Ordering::SeqCst);
    let creating = happen.node("slow");
    assert!(
        timeout(Duration::from_millis(20), creating).await.is_err(),
        "attach hangs, so creation cannot finish"
    );
    // The dropped future took its half-made node with it.
    assert!(happen.find_node("slow").is_none());

    transport.hold.store(false, Ordering::SeqCst);
    let node = timeout(T, happen.node("slow")).await.unwrap().unwrap();
    node.on("ping", |_e: Event, _c: Context| async { "pong" })
        .unwrap();
    let client = timeout(T, happen.node("client")).await.unwrap().unwrap();
    let v = timeout(T, client.send("slow", Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "pong");
}

/// A prepared node is attached only when it starts, with its handlers in place: the
/// transport never sees it before; dropped unstarted (or mid-start) it leaves nothing behind.
#[tokio::test]
async fn a_prepared_node_is_attached_only_when_it_starts() {
    let transport = SlowAttach::default();
    let happen = Happen::builder()
        .transport(transport.clone())
        .build()
        .unwrap();
    let client = timeout(T, happen.node("client")).await.unwrap().unwrap();

    let svc = happen.prepare("svc").unwrap();
    // the id is taken while prepared
    let err = happen.prepare("svc").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateNode);
    svc.on("ping", |_e: Event, _c: Context| async { "pong" })
        .unwrap();
    let err = client
        .send("svc", Event::new("ping", ()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownNode, "not attached yet");

    // dropped while starting: removed again, the id free
    transport.hold.store(true, Ordering::SeqCst);
    assert!(
        timeout(Duration::from_millis(20), svc.start())
            .await
            .is_err()
    );
    assert!(happen.find_node("svc").is_none());
    transport.hold.store(false, Ordering::SeqCst);

    // dropped unstarted: the same
    drop(happen.prepare("svc").unwrap());
    assert!(happen.find_node("svc").is_none());

    let svc = happen.prepare("svc").unwrap();
    svc.on("ping", |_e: Event, _c: Context| async { "pong" })
        .unwrap();
    let svc = timeout(T, svc.start()).await.unwrap().unwrap();
    assert_eq!(
        client.send(&svc, Event::new("ping", ())).await.unwrap(),
        "pong"
    );

    happen.shutdown(Duration::from_secs(1)).await;
    let err = happen.prepare("late").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_removes_one_node_and_answers_everything_it_held() {
    let happen = Happen::new();
    let worker = happen
        .node_with("worker", NodeOptions::new().max_concurrent(2))
        .await
        .unwrap();
    worker
        .on("hang", |_e: Event, _c: Context| async {
            std::future::pending::<()>().await;
        })
        .unwrap();
    worker
        .on("quick", |_e: Event, _c: Context| async { "quick" })
        .unwrap();
    let other = happen.node("other").await.unwrap();
    other
        .on("ping", |_e: Event, _c: Context| async { "pong" })
        .unwrap();
    let client = happen.node("client").await.unwrap();

    // Two running (they never finish by themselves), three queued.
    let held: Vec<_> = (0..5)
        .map(|_| client.send(&worker, Event::new("hang", ())).into_future())
        .collect();
    wait_until("two running, three queued", || {
        let s = worker.stats();
        (s.active, s.queued) == (2, 3)
    })
    .await;

    timeout(T, worker.close(Duration::from_millis(100)))
        .await
        .expect("close returns after its deadline");
    for r in timeout(T, futures::future::join_all(held)).await.unwrap() {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::ShutDown);
    }
    assert!(happen.find_node("worker").is_none());
    let by_id = timeout(T, client.send("worker", Event::new("quick", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(by_id.kind(), ErrorKind::UnknownNode);
    let by_handle = client.tell(&worker, Event::new("quick", ())).unwrap_err();
    assert_eq!(by_handle.kind(), ErrorKind::ShutDown);

    // The rest of the instance is untouched, and the id is free again.
    let v = timeout(T, client.send(&other, Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "pong");
    let again = happen.node("worker").await.unwrap();
    again
        .on("quick", |_e: Event, _c: Context| async { "again" })
        .unwrap();
    let v = timeout(T, client.send("worker", Event::new("quick", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "again");
}

/// A node closed while eight senders keep filling it answers every send: a sender counted in
/// just before the close, a driver taking its event, the close taking what waits — each
/// event is answered once, by its flow or with `ShutDown`, and the counters reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_under_eight_senders_answers_every_send() {
    const SENDERS: usize = 8;
    const EACH: usize = 5_000;
    let happen = Happen::new();
    let worker = happen
        .node_with("worker", NodeOptions::new().max_concurrent(3))
        .await
        .unwrap();
    worker
        .on("job", |e: Event, _c: Context| async move {
            tokio::task::yield_now().await; // some flows wait in their own task
            e.payload().clone()
        })
        .unwrap();
    let started = Arc::new(tokio::sync::Barrier::new(SENDERS + 1));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (happen, worker, started) = (happen.clone(), worker.clone(), started.clone());
            tokio::spawn(async move {
                let me = happen.node(format!("sender-{s}")).await.unwrap();
                started.wait().await;
                let mut replies = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    replies.push(me.send(&worker, Event::new("job", i)).into_future());
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                let (mut done, mut shut) = (0usize, 0usize);
                for r in futures::future::join_all(replies).await {
                    match r {
                        Ok(_) => done += 1,
                        Err(e) if e.kind() == ErrorKind::ShutDown => shut += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                (done, shut)
            })
        })
        .collect();
    started.wait().await;
    wait_until("a few thousand sent", || worker.stats().accepted > 4_000).await;
    timeout(T, worker.close(Duration::ZERO))
        .await
        .expect("close returns");
    let (mut done, mut shut) = (0, 0);
    for s in senders {
        let (d, c) = timeout(T, s)
            .await
            .expect("every send is answered")
            .unwrap();
        done += d;
        shut += c;
    }
    assert_eq!(done + shut, SENDERS * EACH);
    assert!(shut > 0, "the close came while events waited");
    let stats = worker.stats();
    assert_eq!((stats.active, stats.queued), (0, 0));
    assert_eq!(stats.completed as usize, done);
    assert_eq!(
        stats.accepted,
        stats.completed + stats.failed + stats.cancelled + stats.displaced
    );
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_shuts_down_and_leaks_no_task() {
    let baseline = alive_tasks();
    let happen = Happen::new();
    let mut nodes = Vec::new();
    let hangs_started = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        let node = happen.node(format!("n{i}")).await.unwrap();
        let started = hangs_started.clone();
        node.on("hang", move |_e: Event, _c: Context| {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        })
        .unwrap();
        node.on("ping", |_e: Event, _c: Context| async { "pong" })
            .unwrap();
        nodes.push(node);
    }
    let client = happen.node("client").await.unwrap();
    // Every node has a driver (pings) and two flows waiting in their own tasks (hangs).
    let mut hanging = Vec::new();
    for node in &nodes {
        let v = timeout(T, client.send(node, Event::new("ping", ())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, "pong");
        for _ in 0..2 {
            hanging.push(client.send(node, Event::new("hang", ())).into_future());
        }
    }
    // (a hang's slot is taken when it is sent; its flow starts, and moves to its own task,
    // when a driver takes it)
    wait_until("all hangs running in their own tasks", || {
        hangs_started.load(Ordering::SeqCst) == 20 && alive_tasks() > baseline + 20
    })
    .await;
    assert!(nodes.iter().all(|n| n.stats().active == 2));

    let clone = happen.clone();
    drop(happen);
    assert!(
        nodes[0].stats().active == 2,
        "a clone still owns the instance"
    );
    drop(clone);

    for r in timeout(T, futures::future::join_all(hanging))
        .await
        .unwrap()
    {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::ShutDown);
    }
    let err = client.tell(&nodes[3], Event::new("ping", ())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown);
    // Node handles may outlive the instance; its tasks do not.
    wait_until("every task of the instance ended", || {
        alive_tasks() == baseline
    })
    .await;
}

/// Dropping the last `Happen` handle inside a handler — even in a closure handler's
/// synchronous part, which runs while its node starts flows in order — shuts the instance
/// down without deadlocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_inside_a_handler_does_not_deadlock() {
    let happen = Happen::new();
    let node = happen.node("owner").await.unwrap();
    let holder = Arc::new(std::sync::Mutex::new(Some(happen)));
    let h = holder.clone();
    node.on("drop-instance", move |_e: Event, _c: Context| {
        drop(h.lock().unwrap().take()); // the last handle, dropped before the async body
        async { "dropped" }
    })
    .unwrap();
    let reply = node.send(&node, Event::new("drop-instance", ()));
    let out = timeout(T, reply).await.expect("no deadlock");
    // The flow was cancelled by the shutdown it caused, or finished first: either answers.
    match out {
        Ok(v) => assert_eq!(v, "dropped"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ShutDown),
    }
    assert!(holder.lock().unwrap().is_none());
    let err = node
        .tell(&node, Event::new("drop-instance", ()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown);
}

/// A node runs on a Tokio runtime; creating one elsewhere is a `NoRuntime` error that says what
/// to do (not a configuration error, not a panic).
#[test]
fn creating_a_node_outside_a_runtime_is_a_no_runtime_error() {
    let happen = Happen::new();
    let err = futures::executor::block_on(happen.node("outside")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoRuntime, "{err}");
    assert!(err.message().contains("tokio::main"), "{err}");
    // Nothing half-made is left behind: inside a runtime, the id is free.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { happen.node("outside").await.map(|_| ()) })
        .unwrap();
}

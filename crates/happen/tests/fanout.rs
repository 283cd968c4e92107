//! Fan-out (`Node::send_all`, `Context::send_all`) and one handler on several nodes
//! (`Node::on_all`).

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use happen::{Context, Error, ErrorKind, Event, Happen, Node};
use serde_json::{Value, json};

async fn nodes(happen: &Happen, ids: &[&str]) -> Vec<Node> {
    let mut out = Vec::new();
    for id in ids {
        out.push(happen.node(*id).await.unwrap());
    }
    out
}

/// A handler answering with the node it runs on and the event's causal ids.
async fn describe(event: Event, ctx: Context) -> Value {
    json!({
        "node": ctx.node_id().as_str(),
        "payload": event.payload(),
        "id": event.id().to_string(),
        "correlation": event.correlation_id().to_string(),
        "causation": event.causation_id().map(|c| c.to_string()),
        "sender": event.sender().as_str(),
    })
}

#[tokio::test]
async fn three_targets_give_three_values_in_order_and_by_id() {
    let happen = Happen::new();
    let targets = nodes(&happen, &["c", "a", "b"]).await;
    Node::on_all(&targets, "who", describe).unwrap();
    let client = happen.node("client").await.unwrap();

    let all = client
        .send_all(&targets, Event::new("who", 7))
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let order: Vec<String> = all
        .iter()
        .map(|(id, r)| {
            let v = r.as_ref().unwrap();
            assert_eq!(v["node"], id.as_str());
            assert_eq!(v["payload"], 7);
            id.to_string()
        })
        .collect();
    assert_eq!(order, ["c", "a", "b"]);
    assert_eq!(all.get("a").unwrap().as_ref().unwrap()["node"], "a");
    assert!(all.get("client").is_none());
    let values = all.all_ok().unwrap();
    assert_eq!(
        values.iter().map(|v| v["node"].clone()).collect::<Vec<_>>(),
        ["c", "a", "b"]
    );
}

#[tokio::test(start_paused = true)]
async fn each_target_fails_on_its_own_while_the_others_succeed() {
    let happen = Happen::new();
    let [ok1, silent, broken, slow, ok2] =
        <[Node; 5]>::try_from(nodes(&happen, &["ok1", "silent", "broken", "slow", "ok2"]).await)
            .unwrap();
    Node::on_all([&ok1, &ok2], "job", describe).unwrap();
    silent.on("other", describe).unwrap(); // no handler for `job`
    broken
        .on("job", |_e: Event, _c: Context| async {
            Err::<(), _>(Error::handler("out of stock"))
        })
        .unwrap();
    slow.on("job", |_e: Event, _c: Context| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        "too late"
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();

    let started = tokio::time::Instant::now();
    let all = client
        .send_all(
            ["ok1", "silent", "broken", "nobody", "slow", "ok2"],
            Event::new("job", ()),
        )
        .timeout(Duration::from_secs(2))
        .await
        .unwrap();
    // One deadline for all: the slow target's timeout ends the wait, not 60 s.
    assert!(started.elapsed() < Duration::from_secs(3));

    let kinds: Vec<Option<ErrorKind>> = all
        .iter()
        .map(|(_, r)| r.as_ref().err().map(Error::kind))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(ErrorKind::NoHandler),
            Some(ErrorKind::Handler),
            Some(ErrorKind::UnknownNode),
            Some(ErrorKind::Timeout),
            None
        ]
    );
    let broken_err = all.get("broken").unwrap().as_ref().unwrap_err();
    assert_eq!(broken_err.message(), "out of stock");
    assert_eq!(broken_err.node().map(|n| n.as_str()), Some("broken"));
    assert_eq!(all.get("ok2").unwrap().as_ref().unwrap()["node"], "ok2");
    let first_error = all.clone().all_ok().unwrap_err();
    assert_eq!(first_error.kind(), ErrorKind::NoHandler);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_run_concurrently_under_one_timeout() {
    let happen = Happen::new();
    let targets = nodes(&happen, &["p1", "p2", "p3"]).await;
    Node::on_all(&targets, "quote", |_e: Event, ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ctx.node_id().to_string()
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();

    let started = Instant::now();
    let all = client
        .send_all(&targets, Event::new("quote", ()))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        all.all_ok().unwrap(),
        [json!("p1"), json!("p2"), json!("p3")]
    );
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(
        took < Duration::from_millis(350),
        "three 200 ms handlers took {took:?}"
    );
}

#[tokio::test]
async fn every_target_gets_its_own_event_id_in_one_transaction() {
    let happen = Happen::new();
    let targets = nodes(&happen, &["a", "b", "c"]).await;
    Node::on_all(&targets, "who", describe).unwrap();
    let client = happen.node("client").await.unwrap();

    let values = client
        .send_all(&targets, Event::new("who", ()))
        .await
        .unwrap()
        .all_ok()
        .unwrap();
    let ids: HashSet<&str> = values.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "event ids must differ: {values:?}");
    let correlations: HashSet<&str> = values
        .iter()
        .map(|v| v["correlation"].as_str().unwrap())
        .collect();
    assert_eq!(correlations.len(), 1, "one transaction: {values:?}");
    for v in &values {
        assert_eq!(v["sender"], "client");
        assert!(v["causation"].is_null()); // a root event, as `send` makes
    }

    // An explicit correlation id is kept for every copy.
    let txn = happen::CorrelationId::parse("txn-order-9");
    let values = client
        .send_all(&targets, Event::new("who", ()).with_correlation_id(txn))
        .await
        .unwrap()
        .all_ok()
        .unwrap();
    assert!(values.iter().all(|v| v["correlation"] == "txn-order-9"));
}

#[tokio::test]
async fn inside_a_flow_every_copy_is_caused_by_the_flows_event() {
    let happen = Happen::new();
    let targets = nodes(&happen, &["a", "b"]).await;
    Node::on_all(&targets, "who", describe).unwrap();
    let shop = happen.node("shop").await.unwrap();
    shop.on("order", |event: Event, ctx: Context| async move {
        let all = ctx.send_all(["a", "b"], Event::new("who", ())).await?;
        Ok::<_, Error>(json!({
            "me": event.id().to_string(),
            "txn": event.correlation_id().to_string(),
            "calls": all.all_ok()?,
        }))
    })
    .unwrap();

    let reply = shop.send(&shop, Event::new("order", ())).await.unwrap();
    let calls = reply["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    for call in calls {
        assert_eq!(call["causation"], reply["me"]);
        assert_eq!(call["correlation"], reply["txn"]);
        assert_eq!(call["sender"], "shop");
    }
}

#[tokio::test]
async fn bad_input_fails_the_call_and_sends_nothing() {
    let happen = Happen::new();
    let targets = nodes(&happen, &["a", "b"]).await;
    Node::on_all(&targets, "job", describe).unwrap();
    let client = happen.node("client").await.unwrap();

    let err = client
        .send_all(["a", "b", "a"], Event::new("job", ()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateNode);
    assert!(err.message().contains("`a` is named twice"), "{err}");
    // A handle and an id of the same node are the same target.
    let err = client
        .send_all(
            [(&targets[1]).into(), happen::Target::from("b")],
            Event::new("job", ()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateNode);

    // A long list too (checked another way).
    let mut many: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    many.push("n3".into());
    let err = client
        .send_all(many, Event::new("job", ()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateNode);
    assert!(err.message().contains("`n3`"), "{err}");

    let err = client
        .send_all(["a", "b"], Event::new("", ()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEvent);

    for node in &targets {
        assert_eq!(
            node.stats().accepted,
            0,
            "nothing was sent to {}",
            node.id()
        );
    }

    // No targets: nothing to do, nothing failed.
    let none: [&str; 0] = [];
    let all = client.send_all(none, Event::new("job", ())).await.unwrap();
    assert!(all.is_empty());
}

#[tokio::test]
async fn on_all_registers_on_every_node_or_on_none() {
    let happen = Happen::new();
    let [a, b, c] = <[Node; 3]>::try_from(nodes(&happen, &["a", "b", "c"]).await).unwrap();
    b.on("job", |_e: Event, _c: Context| async { "b's own" })
        .unwrap();

    let err = Node::on_all([&a, &b, &c], "job", describe).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateHandler);
    for node in [&a, &c] {
        let err = node.send(node, Event::new("job", ())).await.unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::NoHandler,
            "nothing registered on {}",
            node.id()
        );
    }
    let err = Node::on_all([&a], "bad.{", describe).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPattern);

    Node::on_all([&a, &c], "job", describe).unwrap();
    assert_eq!(
        a.send(&a, Event::new("job", ())).await.unwrap()["node"],
        "a"
    );
    assert_eq!(
        a.send(&c, Event::new("job", ())).await.unwrap()["node"],
        "c"
    );
    assert_eq!(a.send(&b, Event::new("job", ())).await.unwrap(), "b's own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_fan_outs_keep_every_result_with_its_target() {
    const TARGETS: usize = 8;
    const ROUNDS: u64 = 500;
    let happen = Happen::new();
    let ids: Vec<String> = (0..TARGETS).map(|i| format!("t{i}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let targets = nodes(&happen, &id_refs).await;
    Node::on_all(&targets, "add", |event: Event, ctx: Context| async move {
        tokio::task::yield_now().await;
        json!([ctx.node_id().as_str(), event.payload()])
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();

    let mut tasks = Vec::new();
    for round in 0..ROUNDS {
        let client = client.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            let all = client
                .send_all(ids.iter().map(String::as_str), Event::new("add", round))
                .await
                .unwrap();
            for ((id, result), expected) in all.into_iter().zip(&ids) {
                assert_eq!(id.as_str(), expected);
                assert_eq!(result.unwrap(), json!([expected, round]));
            }
        }));
    }
    support::join_all_within("every sender got its answers", tasks).await;
    let handled: u64 = targets.iter().map(|n| n.stats().completed).sum();
    assert_eq!(handled, ROUNDS * TARGETS as u64);
}

#[tokio::test]
async fn a_full_target_is_that_targets_queue_full_and_a_streaming_target_gives_its_final_value() {
    let happen = Happen::new();
    let options = happen::NodeOptions::new().max_concurrent(1).queue_limit(1);
    let busy = happen.node_with("busy", options).await.unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    {
        let gate = gate.clone();
        busy.on("job", move |_e: Event, _c: Context| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                "busy done"
            }
        })
        .unwrap();
    }
    let streamer = happen.node("streamer").await.unwrap();
    streamer
        .on(
            "job",
            |_e: Event, _c: Context, emit: happen::Emitter| async move {
                emit.emit(1).await?;
                emit.emit(2).await?;
                Ok::<_, Error>("streamed")
            },
        )
        .unwrap();
    let client = happen.node("client").await.unwrap();

    // One flow runs at `busy`, one waits: its queue is full.
    let running = client.send(&busy, Event::new("job", ()));
    let queued = client.send(&busy, Event::new("job", ()));
    let all = client
        .send_all([&busy, &streamer], Event::new("job", ()))
        .await
        .unwrap();
    let busy_err = all.get("busy").unwrap().as_ref().unwrap_err();
    assert_eq!(busy_err.kind(), ErrorKind::QueueFull);
    assert_eq!(all.get("streamer").unwrap().as_ref().unwrap(), "streamed");

    gate.add_permits(2);
    let both = tokio::time::timeout(support::PATIENCE, futures::future::join(running, queued));
    let (running, queued) = both.await.expect("the held flows finish once let go");
    assert_eq!(running.unwrap(), "busy done");
    assert_eq!(queued.unwrap(), "busy done");
}

/// Drops a token into a channel when the producing flow ends, however it ends.
struct Ended(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_from_every_target_at_the_callers_pace_and_one_stopped_early_is_cancelled() {
    use futures::StreamExt;
    const ITEMS: u64 = 2_000;
    let happen = Happen::new();
    let targets = nodes(&happen, &["s0", "s1", "s2"]).await;
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let handler = move |_e: Event, ctx: Context, out: happen::Emitter| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ended = Ended(Some(tx));
        let ended_tx = ended_tx.clone();
        let node = ctx.node_id().to_string();
        tokio::spawn(async move {
            let _ = rx.await;
            let _ = ended_tx.send(node);
        });
        async move {
            let _ended = _ended;
            for i in 0..ITEMS {
                out.emit(i).await?;
            }
            Ok::<_, Error>(ctx.node_id().to_string())
        }
    };
    Node::on_all(&targets, "count", handler).unwrap();
    let client = happen.node("client").await.unwrap();

    let replies = client
        .send_all(&targets, Event::new("count", ()))
        .timeout(support::PATIENCE)
        .into_replies()
        .unwrap();
    assert_eq!(
        replies
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["s0", "s1", "s2"]
    );
    let mut streams: Vec<_> = replies
        .into_iter()
        .map(|(id, r)| (id, r.into_stream()))
        .collect();

    // s1 is read for ten items and dropped: its producer is cancelled.
    let (_, mut s1) = streams.remove(1);
    for want in 0..10u64 {
        assert_eq!(s1.next().await.unwrap().unwrap(), want);
    }
    drop(s1);
    let stopped = tokio::time::timeout(support::PATIENCE, ended_rx.recv()).await;
    assert_eq!(
        stopped.unwrap().unwrap(),
        "s1",
        "the dropped stream's producer ended first"
    );

    // The others are read to the end, interleaved, each in order with its final value.
    let (mut next, mut done) = (vec![0u64; streams.len()], vec![false; streams.len()]);
    while done.iter().any(|d| !d) {
        for (k, (id, s)) in streams.iter_mut().enumerate() {
            if done[k] {
                continue;
            }
            match s.next().await {
                Some(item) => {
                    assert_eq!(item.unwrap(), next[k], "{id} in order");
                    next[k] += 1;
                }
                None => {
                    assert_eq!(s.final_value().unwrap(), id.as_str());
                    done[k] = true;
                }
            }
        }
    }
    assert_eq!(next, [ITEMS, ITEMS]);
    let mut rest = Vec::new();
    for _ in 0..2 {
        let ended = tokio::time::timeout(support::PATIENCE, ended_rx.recv()).await;
        rest.push(ended.unwrap().unwrap());
    }
    rest.sort();
    assert_eq!(rest, ["s0", "s2"]);
    let stats = targets[1].stats();
    assert_eq!((stats.cancelled, stats.completed), (1, 0));
}

#[tokio::test]
async fn into_replies_keeps_answers_already_in_and_passes_bad_input_on() {
    let happen = Happen::new();
    let quick = happen.node("quick").await.unwrap();
    quick.on("who", describe).unwrap();
    let held = happen.node("held").await.unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    {
        let gate = gate.clone();
        held.on("who", move |e: Event, c: Context| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                describe(e, c).await
            }
        })
        .unwrap();
    }
    let client = happen.node("client").await.unwrap();

    // Polled once `quick` has answered and while `held` waits: the SendAll took quick's answer.
    let mut all = client.send_all([&quick, &held], Event::new("who", 7));
    support::wait_until("quick answered", || quick.stats().completed == 1).await;
    assert!(
        futures::poll!(&mut all).is_pending(),
        "held has not answered"
    );
    let mut replies = all.into_replies().unwrap().into_iter();
    let (id, quick_reply) = replies.next().unwrap();
    assert_eq!(id, "quick");
    // resolves at once: the answer was already in the SendAll
    let answer = futures::poll!(quick_reply);
    assert!(
        matches!(&answer, std::task::Poll::Ready(Ok(v)) if v["node"] == "quick"),
        "{answer:?}"
    );
    let (id, held_reply) = replies.next().unwrap();
    assert_eq!(id, "held");
    gate.add_permits(1);
    assert_eq!(held_reply.await.unwrap()["node"], "held");

    let err = client
        .send_all(["quick", "quick"], Event::new("who", ()))
        .into_replies()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateNode);
}

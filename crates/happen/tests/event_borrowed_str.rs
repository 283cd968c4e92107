//! Node ids and event types from borrowed, non-`'static` strings (a `&str` read from config,
//! a request, a `format!`ed `String`), and the allocation-free `from_static` forms.

use std::time::Duration;

use happen::{Context, Event, EventType, Happen, Node, NodeId};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

/// Takes ids and types as plain `&str`s whose lifetime is not `'static`.
async fn node_for(happen: &Happen, id: &str) -> happen::Result<Node> {
    happen.node(id).await
}

fn event_of(ty: &str, payload: u64) -> Event {
    Event::new(ty, payload)
}

#[tokio::test]
async fn nodes_and_events_from_borrowed_strings() {
    let happen = Happen::new();
    let ids: Vec<String> = (0..3).map(|i| format!("worker-{i}")).collect();
    let types: Vec<String> = ["job.start", "job.stop"].map(String::from).to_vec();
    for id in &ids {
        let node = node_for(&happen, id.as_str()).await.unwrap();
        node.on("job.*", |e: Event, c: Context| async move {
            format!("{} at {}", e.event_type(), c.node_id())
        })
        .unwrap();
    }
    let client = happen.node(String::from("client").as_str()).await.unwrap();
    for id in &ids {
        for ty in &types {
            let reply = timeout(T, client.send(id.as_str(), event_of(ty.as_str(), 1)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply, format!("{ty} at {id}"));
        }
    }
    assert_eq!(NodeId::from(ids[0].as_str()), "worker-0");
}

#[tokio::test]
async fn from_static_forms_are_consts() {
    const PING: EventType = EventType::from_static("ping");
    const ECHO: NodeId = NodeId::from_static("echo");
    let happen = Happen::new();
    let echo = happen.node(ECHO).await.unwrap();
    echo.on(PING.as_str(), |e: Event, _c: Context| async move {
        e.event_type().to_owned()
    })
    .unwrap();
    let reply = timeout(T, echo.send(&ECHO, Event::new(PING, ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "ping");
}

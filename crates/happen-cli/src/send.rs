//! `happen send` and `happen broadcast`.

use futures::StreamExt;
use happen::{CorrelationId, Event, Result};
use serde_json::Value;

use crate::conn::{ConnArgs, payload};
use crate::{BroadcastArgs, SendArgs};

fn print_value(v: &Value, pretty: bool) {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    println!("{}", text.unwrap_or_else(|_| "null".to_owned()));
}

pub(crate) async fn send(conn: &ConnArgs, a: SendArgs) -> Result<()> {
    let value = payload(a.json.as_deref())?;
    let sender = conn.sender(&a.sender).await?;
    // an explicit correlation id, known before the event is stamped (its id is not)
    let correlation = CorrelationId::new();
    if a.verbose {
        eprintln!("correlation {correlation} from {}", sender.node.id());
    }
    let event = Event::new(a.event_type.as_str(), value).with_correlation_id(correlation);
    let reply = sender.node.send(a.node.as_str(), event).timeout(a.timeout);
    let result = if a.stream {
        let mut items = reply.into_stream();
        let mut failed = None;
        while let Some(item) = items.next().await {
            match item {
                Ok(v) => print_value(&v, a.pretty),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => {
                print_value(items.final_value().unwrap_or(&Value::Null), a.pretty);
                Ok(())
            }
        }
    } else {
        reply.await.map(|v| print_value(&v, a.pretty))
    };
    sender.close().await;
    result
}

pub(crate) async fn broadcast(conn: &ConnArgs, a: BroadcastArgs) -> Result<()> {
    let value = payload(a.json.as_deref())?;
    let sender = conn.sender(&a.sender).await?;
    let correlation = CorrelationId::new();
    let event = Event::new(a.event_type.as_str(), value).with_correlation_id(correlation.clone());
    let result = sender.node.broadcast(event);
    // the shutdown flushes the broadcast to the server
    sender.close().await;
    result?;
    println!("{correlation}");
    Ok(())
}

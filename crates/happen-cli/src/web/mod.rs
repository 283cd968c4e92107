//! `happen web`: a live view of a running system in the browser. One page (HTML, JS and CSS
//! compiled in), updated by one server-sent event stream per tab (`/api/stream`, resumable
//! with `Last-Event-ID`), and a JSON API:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/stream?pattern=P` | the event stream: `event` (a tapped event whose type matches `P`), `reply` (a request's reply paired with it), `completion` (a tell's or broadcast's end at one node, from its completion record), `nodes` (a discovery snapshot with rates, warnings and each process's transport counters, every second), `durable` (when it changes), `status` (the NATS connection), `gap` (frames were lost: reload) |
//! | `GET /api/nodes` | the latest nodes snapshot with its warnings (discovers now when no page is open) |
//! | `GET /api/transactions/{correlation-id}` | the causal tree of a transaction: each step with its `endUs`, `durationMs` and `outcome` when known (a request's reply; a tell's or broadcast's completion records, per receiving node in `completions`) |
//! | `GET /api/durable` | per durable node its consumer's pending / ack-pending / redelivered counts, dead letters per node and the latest ones with their error headers (`{}` without durable nodes) |
//! | `GET /api/errors` | the error replies seen, grouped by kind, node and code, with the latest examples |
//! | `GET /api/pattern?pattern=P` | checks a pattern (400 with the reason when it is not one) |
//! | `GET /api/status` | the NATS connection and how many pages are open |
//! | `POST /api/send` | `{"node"?, "type", "payload"?}`: sends (or, without `node`, broadcasts) an event; only with `--allow-send` |
//!
//! With `--replay FILE` (a `happen tap --record` file) it shows the recording instead, without
//! NATS: `GET /api/status` has `replay` (the file, `startUs`, `endUs`, how many events, replies,
//! completion records and snapshots), `GET /api/replay?at=T&pattern=P&limit=N` answers the
//! system as of `T` (µs since the epoch; default the end): the last events by then, their
//! replies and completions, the latest node snapshot with the sparklines' history and the
//! heatmaps' columns (`heat`: per node the queue-wait and handler-time buckets of each
//! snapshot's interval), the errors; `/api/nodes`, `/api/errors` and
//! `/api/transactions/{id}` take `?at=T` too. The page shows a time scrubber.
//!
//! Listens on loopback by default; any other address needs a token (`--token` or
//! `HAPPEN_WEB_TOKEN`), given as `?token=` or `Authorization: Bearer`. Without a token the API
//! answers only requests whose `Host` is a loopback name (against DNS rebinding). The watch (tap,
//! replies, discovery) runs only while a page is connected.

mod durable;
mod flow;
mod hub;
mod replay;
mod view;
mod warnings;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use happen::pattern::Pattern;
use happen::{CorrelationId, Error, ErrorKind, Event, Result};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use self::hub::{Frame, Hub, Watcher};
use crate::WebArgs;
use crate::conn::{ConnArgs, Sender};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

struct App {
    hub: Arc<Hub>,
    token: Option<String>,
    allow_send: bool,
    conn: ConnArgs,
    sender: OnceCell<Sender>,
}

type Shared = Arc<App>;

/// An HTTP error with a JSON body `{"error": "..."}`.
struct Fail(StatusCode, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

pub(crate) async fn web(conn: &ConnArgs, a: WebArgs) -> Result<()> {
    let token = a.token.clone().filter(|t| !t.is_empty());
    if !a.listen.ip().is_loopback() && token.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "`--listen {}` is not a loopback address: give a token (`--token` or HAPPEN_WEB_TOKEN) that the page must present",
                a.listen
            ),
        ));
    }
    if let Some(path) = &a.replay {
        return replay_web(path, a.listen, token).await;
    }
    let transport = conn.connect().await?;
    let listener = bind(a.listen).await?;
    let addr = listener.local_addr().unwrap_or(a.listen);
    let app = Arc::new(App {
        hub: Hub::new(transport.clone(), hub_options(&a)),
        token: token.clone(),
        allow_send: a.allow_send,
        conn: conn.clone(),
        sender: OnceCell::new(),
    });
    let query = token
        .as_deref()
        .map_or(String::new(), |t| format!("?token={t}"));
    eprintln!(
        "happen web on http://{addr}/{query} (Ctrl-C to stop){}{}",
        if a.allow_send {
            "; sending allowed"
        } else {
            ""
        },
        if a.flow_events {
            "; publishing flow-balance events (node.down, system.down)"
        } else {
            ""
        }
    );
    let router = router(app.clone());
    let connection = crate::conn::report_connection(&transport, &conn.url);
    let result = tokio::select! {
        r = axum::serve(listener, router) => r.map_err(|e| Error::new(ErrorKind::Transport, format!("the web server failed: {e}"))),
        _ = tokio::signal::ctrl_c() => Ok(()),
        never = connection => match never {},
    };
    if let Some(sender) = Arc::into_inner(app).and_then(|a| a.sender.into_inner()) {
        sender.close().await;
    }
    result
}

fn hub_options(a: &WebArgs) -> hub::HubOptions {
    hub::HubOptions {
        thresholds: warnings::Thresholds {
            pressure_held_us: a.pressure_held.as_micros().min(u64::MAX as u128) as u64,
            rejecting_snapshots: a.rejecting_for,
            dead_letter_polls: a.dead_letters_for,
            dead_letter_jump: a.dead_letters_jump,
            stream_stall_us: a.stream_stall.as_micros().min(u64::MAX as u128) as u64,
        },
        flow: a.flow_events.then_some(flow::FlowConfig {
            system_warning: a.system_warning,
            system_critical: a.system_critical,
        }),
    }
}

async fn bind(listen: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("cannot listen on {listen}: {e}"),
        )
    })
}

/// `happen web --replay FILE`: the page on a recording, without NATS.
async fn replay_web(
    path: &std::path::Path,
    listen: std::net::SocketAddr,
    token: Option<String>,
) -> Result<()> {
    let replay = Arc::new(replay::Replay::load(path)?);
    let listener = bind(listen).await?;
    let addr = listener.local_addr().unwrap_or(listen);
    let query = token
        .as_deref()
        .map_or(String::new(), |t| format!("?token={t}"));
    let summary = replay.summary();
    eprintln!(
        "happen web on http://{addr}/{query} (Ctrl-C to stop); replaying `{}`: {} events, {} node snapshots over {:.1}s",
        path.display(),
        summary["events"],
        summary["snapshots"],
        replay
            .time(None)
            .saturating_sub(summary["startUs"].as_u64().unwrap_or(0)) as f64
            / 1e6
    );
    let api = Router::new()
        .route("/api/status", get(replay_status))
        .route("/api/replay", get(replay_at))
        .route("/api/nodes", get(replay_nodes))
        .route("/api/transactions/{id}", get(replay_transaction))
        .route("/api/errors", get(replay_errors))
        .route("/api/pattern", get(pattern))
        .layer(middleware::from_fn_with_state(Arc::new(token), authorize))
        .with_state(replay);
    tokio::select! {
        r = axum::serve(listener, pages().merge(api)) => r.map_err(|e| Error::new(ErrorKind::Transport, format!("the web server failed: {e}"))),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The page and its assets: public (they hold no data).
fn pages() -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript", APP_JS) }),
        )
        .route("/app.css", get(|| async { asset("text/css", APP_CSS) }))
}

type Replayed = Arc<replay::Replay>;

/// `?at=` (µs since the epoch; default: the end of the recording), `?pattern=`, `?limit=`.
#[derive(Deserialize)]
struct AtQuery {
    at: Option<u64>,
    pattern: Option<String>,
    limit: Option<usize>,
}

async fn replay_status(State(r): State<Replayed>) -> Json<Value> {
    Json(json!({"nats": "replay", "pages": 0, "allowSend": false, "replay": r.summary()}))
}

async fn replay_at(State(r): State<Replayed>, Query(q): Query<AtQuery>) -> Response {
    let pattern = match parse_pattern(q.pattern.as_deref()) {
        Ok(p) => p,
        Err(f) => return f.into_response(),
    };
    let t = r.time(q.at);
    Json(r.at(t, pattern.as_ref(), q.limit.unwrap_or(replay::TAIL))).into_response()
}

async fn replay_nodes(State(r): State<Replayed>, Query(q): Query<AtQuery>) -> Response {
    let t = r.time(q.at);
    match r.nodes(t) {
        Some(n) => Json(n.clone()).into_response(),
        None => Fail(
            StatusCode::NOT_FOUND,
            format!(
                "the recording has no node snapshot by {} (record with `happen tap --record FILE --snapshot-every 1s`)",
                crate::time::rfc3339(t)
            ),
        )
        .into_response(),
    }
}

async fn replay_transaction(
    State(r): State<Replayed>,
    Path(id): Path<String>,
    Query(q): Query<AtQuery>,
) -> Response {
    let t = r.time(q.at);
    match r.transaction(&id, t) {
        Some(v) => Json(v).into_response(),
        None => Fail(
            StatusCode::NOT_FOUND,
            format!(
                "no event of transaction `{id}` is in the recording by {}",
                crate::time::rfc3339(t)
            ),
        )
        .into_response(),
    }
}

async fn replay_errors(State(r): State<Replayed>, Query(q): Query<AtQuery>) -> Json<Value> {
    Json(r.errors(r.time(q.at)))
}

/// The page and its assets are public (they hold no data); the API asks for the token.
fn router(app: Shared) -> Router {
    let api = Router::new()
        .route("/api/stream", get(stream))
        .route("/api/nodes", get(nodes))
        .route("/api/transactions/{id}", get(transaction))
        .route("/api/errors", get(errors))
        .route("/api/durable", get(durable_view))
        .route("/api/pattern", get(pattern))
        .route("/api/status", get(status))
        .route("/api/send", post(send))
        .layer(middleware::from_fn_with_state(
            Arc::new(app.token.clone()),
            authorize,
        ))
        .with_state(app);
    pages().merge(api)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// Compares without returning early, so the time taken says nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is `host` (a `Host` header) a name of this machine's loopback?
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// With a token, every request presents it (`?token=` or `Authorization: Bearer`). Without
/// one (loopback only), the `Host` must be a loopback name: a web page elsewhere that rebinds
/// its own name to 127.0.0.1 cannot read the API.
async fn authorize(State(token): State<Arc<Option<String>>>, req: Request, next: Next) -> Response {
    let Some(token) = token.as_deref() else {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if loopback_host(host) {
            return next.run(req).await;
        }
        return Fail(
            StatusCode::FORBIDDEN,
            format!(
                "`Host: {host}` is not a loopback name; open the page as http://127.0.0.1:<port>/ or give happen web a token"
            ),
        )
        .into_response();
    };
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(str::to_owned)
    });
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let ok = [from_query, from_header]
        .into_iter()
        .flatten()
        .any(|t| same(t.as_bytes(), token.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        Fail(
            StatusCode::UNAUTHORIZED,
            "this happen web needs its token: open the address it printed (`?token=…`)".into(),
        )
        .into_response()
    }
}

#[derive(Deserialize)]
struct PatternQuery {
    pattern: Option<String>,
    /// Send the frames kept so far, then end the stream (for a one-shot snapshot, e.g. a
    /// headless browser rendering the page once).
    #[serde(default)]
    once: Option<String>,
}

fn parse_pattern(p: Option<&str>) -> std::result::Result<Option<Pattern>, Fail> {
    match p.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(p) => Pattern::parse(p)
            .map(Some)
            .map_err(|e| Fail(StatusCode::BAD_REQUEST, e.message().to_owned())),
    }
}

async fn pattern(Query(q): Query<PatternQuery>) -> Response {
    match parse_pattern(q.pattern.as_deref()) {
        Ok(_) => Json(json!({"ok": true})).into_response(),
        Err(f) => f.into_response(),
    }
}

async fn status(State(app): State<Shared>) -> Json<Value> {
    let mut s = app.hub.status();
    s["pages"] = json!(app.hub.watchers());
    s["allowSend"] = json!(app.allow_send);
    Json(s)
}

fn sse_event(f: &Frame) -> SseEvent {
    SseEvent::default()
        .id(f.id.to_string())
        .event(f.name)
        .data(f.data.as_str())
}

/// What one page's stream still has to send.
struct Feed {
    _watcher: Watcher,
    replay: std::vec::IntoIter<Arc<Frame>>,
    live: Option<tokio::sync::broadcast::Receiver<Arc<Frame>>>,
    pattern: Option<Pattern>,
    first: Option<SseEvent>,
}

impl Feed {
    fn keeps(pattern: Option<&Pattern>, f: &Frame) -> bool {
        match (pattern, &f.event_type) {
            (Some(p), Some(t)) => p.matches(t),
            _ => true,
        }
    }

    async fn next(&mut self) -> Option<SseEvent> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let pattern = self.pattern.as_ref();
        for f in self.replay.by_ref() {
            if Self::keeps(pattern, &f) {
                return Some(sse_event(&f));
            }
        }
        let live = self.live.as_mut()?;
        loop {
            match live.recv().await {
                Ok(f) if Self::keeps(self.pattern.as_ref(), &f) => return Some(sse_event(&f)),
                Ok(_) => continue,
                // too slow a page: end its stream; it reconnects with its Last-Event-ID and
                // gets the frames still kept
                Err(_) => return None,
            }
        }
    }
}

async fn stream(
    State(app): State<Shared>,
    Query(q): Query<PatternQuery>,
    headers: HeaderMap,
) -> std::result::Result<Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>>, Fail> {
    let pattern = parse_pattern(q.pattern.as_deref())?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let joined = app.hub.join(last);
    let first = joined.gap.then(|| {
        SseEvent::default()
            .event("gap")
            .data(r#"{"reason":"frames were dropped since this page's last one"}"#)
    });
    let status = app.hub.status();
    let hello = SseEvent::default().event("status").data(status.to_string());
    let once = q.once.is_some();
    let feed = Feed {
        _watcher: joined.watcher,
        replay: joined.replay.into_iter(),
        live: (!once).then_some(joined.live),
        pattern,
        first: first.or(Some(hello)),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let e = feed.next().await?;
        Some((Ok(e), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn nodes(State(app): State<Shared>) -> Response {
    if let Some(n) = app.hub.nodes() {
        return Json(n).into_response();
    }
    match app
        .hub
        .transport()
        .discover(Duration::from_millis(500), Duration::from_millis(100))
        .await
    {
        Ok(processes) => {
            let nodes = crate::nodes::by_node(&processes);
            Json(json!({"processes": processes.len(), "nodes": nodes, "edges": []})).into_response()
        }
        Err(e) => Fail(StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn transaction(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    match app.hub.transaction(&id) {
        Some(t) => Json(t).into_response(),
        None => Fail(
            StatusCode::NOT_FOUND,
            format!(
                "no event of transaction `{id}` was seen (events are watched only while a page is open)"
            ),
        )
        .into_response(),
    }
}

async fn durable_view(State(app): State<Shared>) -> Json<Value> {
    if let Some(d) = app.hub.durable() {
        return Json(d);
    }
    let t = app.hub.transport();
    // bounded: without JetStream its API requests may wait out their timeouts
    let snapshot = tokio::time::timeout(
        hub::DURABLE_EVERY,
        durable::snapshot(t.client(), &t.config().prefix),
    );
    Json(snapshot.await.ok().flatten().unwrap_or_else(|| json!({})))
}

async fn errors(State(app): State<Shared>) -> Json<Value> {
    Json(app.hub.errors())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// The target; none: a broadcast.
    node: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    payload: Value,
}

async fn send(State(app): State<Shared>, body: axum::body::Bytes) -> Response {
    if !app.allow_send {
        return Fail(
            StatusCode::FORBIDDEN,
            "sending is off: start `happen web --allow-send` to send events from the page".into(),
        )
        .into_response();
    }
    let body: SendBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return Fail(
                StatusCode::BAD_REQUEST,
                format!(
                    r#"the body must be JSON like {{"node": "orders", "type": "order.place", "payload": {{}}}} (without "node": a broadcast): {e}"#
                ),
            )
            .into_response();
        }
    };
    if body.event_type.trim().is_empty() {
        return Fail(StatusCode::BAD_REQUEST, "`type` is empty".into()).into_response();
    }
    let as_web = crate::SenderArgs {
        sender: Some("happen-web".to_owned()),
        sign_key: None,
    };
    let sender = match app
        .sender
        .get_or_try_init(|| async { app.conn.sender(&as_web).await })
        .await
    {
        Ok(s) => s,
        Err(e) => return Fail(StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let correlation = CorrelationId::new();
    let event =
        Event::new(body.event_type.as_str(), body.payload).with_correlation_id(correlation.clone());
    let result = match body.node.as_deref() {
        Some(node) => sender
            .node
            .send(node, event)
            .timeout(Duration::from_secs(10))
            .await
            .map(|v| json!({"correlationId": correlation.to_string(), "reply": v})),
        None => sender
            .node
            .broadcast(event)
            .map(|()| json!({"correlationId": correlation.to_string()})),
    };
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::OK,
            Json(json!({"correlationId": correlation.to_string(), "error": {"kind": e.kind().as_str(), "message": e.message()}})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:4280",
            "localhost:4280",
            "LOCALHOST",
            "[::1]:4280",
            "127.0.0.2",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example:4280",
            "10.0.0.1:4280",
            "[::2]:1",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}

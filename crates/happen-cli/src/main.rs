//! `happen`: poke, watch and measure a live happen system over NATS.
//!
//! ```text
//! happen send NODE TYPE [JSON]       send an event, print the reply
//! happen broadcast TYPE [JSON]       broadcast an event
//! happen tap [PATTERN]               print the events on the happen subjects (listen only)
//! happen nodes                       the live nodes: replicas, limits, active/queued, pressure
//! happen trace CORRELATION_ID        the causal tree of a transaction (live or --from FILE)
//! happen bench send|broadcast ...    a load generator with a latency summary
//! happen web                         a live view in the browser: nodes, tail, transactions, errors
//! ```
//!
//! Errors are one line on stderr (`error: <kind>: <message>`), and the exit code tells the
//! kind apart (see [`exit`] and `happen --help`).

mod bench;
mod conn;
mod exit;
mod nodes;
mod observed;
mod record;
mod send;
mod tap;
mod time;
mod trace;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Poke, watch and measure a live happen system over NATS.
#[derive(Parser, Debug)]
#[command(name = "happen", version, about, after_help = after_help())]
struct Cli {
    #[command(flatten)]
    conn: conn::ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send an event to a node and print its reply (JSON, one line).
    Send(SendArgs),
    /// Broadcast an event to every node with a matching handler; prints its correlation id.
    Broadcast(BroadcastArgs),
    /// Print every event on the happen subjects whose type matches PATTERN, one line each:
    /// time (UTC), type, sender → target, ids. Only listens.
    Tap(TapArgs),
    /// List the live nodes: replicas, limits, active and queued events, pressure.
    Nodes(NodesArgs),
    /// Print the causal tree of a transaction: each event under the event that caused it,
    /// with its node and timing.
    Trace(TraceArgs),
    /// Load a node (or all of them, by broadcasting) and summarise the latency.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve a live view of the system to a browser: nodes with their load and pressure, a
    /// live tail, transaction waterfalls, errors. Watches only while a page is open.
    Web(WebArgs),
}

#[derive(Args, Debug)]
struct WebArgs {
    /// The address to serve on; any address but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:4280", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The token pages and API calls must present (`?token=` or `Authorization: Bearer`);
    /// required for a non-loopback address. Prefer the environment variable.
    #[arg(long, env = "HAPPEN_WEB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Let the page send and broadcast events (`POST /api/send`, from a node `happen-web`).
    #[arg(long, conflicts_with = "replay")]
    allow_send: bool,
    /// Show a recording of `happen tap --record FILE` instead of the live system, with a time
    /// scrubber: the views as of any moment of it. Needs no NATS server.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Broadcast the warnings as the reference's flow-balance events: `node.down` (pattern
    /// `bottleneck`: pressure held too long; `node-failure`: a replica gone from discovery)
    /// and `system.down` (level and pattern, when more than a share of the nodes is down),
    /// once when a condition starts. Discovers every second even with no page open. Dead
    /// letters growing and stalled streams stay on the page (they are watched only while one
    /// is open).
    #[arg(long, conflicts_with = "replay")]
    flow_events: bool,
    /// Pressure held this long is a warning (and a `bottleneck`).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = time::parse_duration)]
    pressure_held: Duration,
    /// Rejections in this many discovery snapshots (one a second) in a row are a warning.
    #[arg(long, default_value_t = 3, value_name = "SNAPSHOTS", value_parser = clap::value_parser!(u32).range(1..))]
    rejecting_for: u32,
    /// Dead letters of a durable node grown in this many checks in a row (one every 2 s, while
    /// a page is open) are a warning.
    #[arg(long, default_value_t = 3, value_name = "CHECKS", value_parser = clap::value_parser!(u32).range(1..))]
    dead_letters_for: u32,
    /// Dead letters of a durable node grown by this many since the previous check are a
    /// warning at once.
    #[arg(long, default_value_t = 10, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    dead_letters_jump: u64,
    /// A stream (a request answered with items) with no frame (item, credit, end) for this
    /// long is stalled: a warning naming the node producing it (while a page is open).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = time::parse_duration)]
    stream_stall: Duration,
    /// `system.down` with level `warning` when more than this share of the nodes is down.
    #[arg(long, default_value_t = 0.3, value_name = "SHARE", value_parser = share)]
    system_warning: f64,
    /// `system.down` with level `critical` when more than this share of the nodes is down.
    #[arg(long, default_value_t = 0.5, value_name = "SHARE", value_parser = share)]
    system_critical: f64,
}

/// A share between 0 and 1 (`0.3`).
fn share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a share between 0 and 1 (write e.g. `0.3`)"
        )),
    }
}

/// Options of commands that create a sending node.
#[derive(Args, Debug, Clone)]
struct SenderArgs {
    /// The id of the sending node (default: `happen-cli-<random>`).
    #[arg(long = "as", value_name = "NODE")]
    sender: Option<String>,
    /// Sign the events with this nkey: a seed (`SU…`) or a file holding one (an `.nk` file,
    /// a NATS user's seed). Receivers verify it against their trust ring (`[security.trust]`
    /// binding the `--as` node id to the key's public key).
    #[arg(long = "sign-key", value_name = "SEED|FILE")]
    sign_key: Option<String>,
}

#[derive(Args, Debug)]
struct SendArgs {
    /// The target node id.
    node: String,
    /// The event type.
    #[arg(value_name = "TYPE")]
    event_type: String,
    /// The payload as JSON (`'{"id": 42}'`, `'"text"'`, `7`); `-` reads it from stdin;
    /// default `null`.
    json: Option<String>,
    /// Print the items of a streaming reply as they arrive (one JSON line each), then the
    /// final value.
    #[arg(long)]
    stream: bool,
    /// How long to wait for the reply (for a stream: for each item), e.g. `500ms`, `10s`, `1m30s`.
    #[arg(long, default_value = "10s", value_parser = time::parse_duration)]
    timeout: Duration,
    /// Print the reply indented over several lines.
    #[arg(long)]
    pretty: bool,
    /// Print the event and correlation ids on stderr (to `happen trace` it later).
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    sender: SenderArgs,
}

#[derive(Args, Debug)]
struct BroadcastArgs {
    /// The event type.
    #[arg(value_name = "TYPE")]
    event_type: String,
    /// The payload as JSON; `-` reads it from stdin; default `null`.
    json: Option<String>,
    #[command(flatten)]
    sender: SenderArgs,
}

#[derive(Args, Debug)]
struct TapArgs {
    /// An event-type pattern as handlers take it: `order.created`, `order.*`,
    /// `{order,payment}.*` (default: every event).
    pattern: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Include the payloads.
    #[arg(long)]
    payload: bool,
    /// Also append every matching event (with its payload) to FILE as JSON lines, with the
    /// replies to those that are requests, the completion records of tells and broadcasts
    /// (from processes with `completion_records` on; this tap beats on `<prefix>.watch` for
    /// `watched` ones) and a snapshot of the nodes every `--snapshot-every`: for
    /// `happen trace --from FILE` and `happen web --replay FILE`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Recording: how often to record the nodes (discovery: limits, load, counters); `0`
    /// records none.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = time::parse_duration, requires = "record")]
    snapshot_every: Duration,
    /// Stop after this many matching events.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop after this long (e.g. `30s`, `5m`); default: until Ctrl-C.
    #[arg(long = "for", value_name = "DURATION", value_parser = time::parse_duration)]
    duration: Option<Duration>,
}

#[derive(Args, Debug)]
struct NodesArgs {
    /// How long to wait for the first answer (and never longer in all).
    #[arg(long, default_value = "1s", value_parser = time::parse_duration)]
    wait: Duration,
    /// Answers stop being gathered this long after the last one.
    #[arg(long, default_value = "250ms", value_parser = time::parse_duration)]
    quiet: Duration,
    /// The answers as JSON (one array, one object per node id with its replicas).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct TraceArgs {
    /// The transaction's correlation id (`txn-…`, printed by `happen tap` and `send -v`).
    correlation_id: String,
    /// Read the events from a file written by `happen tap --record` instead of listening.
    #[arg(long, value_name = "FILE")]
    from: Option<PathBuf>,
    /// Listening: stop this long after the last event of the transaction.
    #[arg(long, default_value = "2s", value_parser = time::parse_duration)]
    idle: Duration,
    /// Listening: stop after this long in any case (default: at the idle time or Ctrl-C).
    #[arg(long = "for", value_name = "DURATION", value_parser = time::parse_duration)]
    duration: Option<Duration>,
    /// The tree as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Send COUNT requests to NODE, CONCURRENCY at a time; summarise replies, errors and
    /// latency.
    Send(BenchSendArgs),
    /// Broadcast COUNT events; latency is publish → delivery back to this process through
    /// the server.
    Broadcast(BenchBroadcastArgs),
}

#[derive(Args, Debug)]
struct BenchSendArgs {
    /// The target node id.
    node: String,
    /// The event type.
    #[arg(value_name = "TYPE")]
    event_type: String,
    /// The payload of every event as JSON; default `null`.
    json: Option<String>,
    /// How many requests.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    count: u64,
    /// How many requests in flight at once.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: usize,
    /// Wait while the target reports backpressure before each send (`Node::ready`).
    #[arg(long)]
    paced: bool,
    /// How long each request may take.
    #[arg(long, default_value = "10s", value_parser = time::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    sender: SenderArgs,
}

#[derive(Args, Debug)]
struct BenchBroadcastArgs {
    /// The event type.
    #[arg(value_name = "TYPE")]
    event_type: String,
    /// The payload of every event as JSON; default `null`.
    json: Option<String>,
    /// How many broadcasts.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    count: u64,
    /// Show this node's pressure reports in the progress bar.
    #[arg(long, value_name = "NODE")]
    watch: Option<String>,
    #[command(flatten)]
    sender: SenderArgs,
}

/// The variables that stand for flags, as `happen --help` lists them.
const ENVIRONMENT: &str = "\
Environment: HAPPEN_NATS_URL, HAPPEN_NATS_PREFIX, HAPPEN_NATS_USER, HAPPEN_NATS_PASSWORD,
HAPPEN_NATS_TOKEN, HAPPEN_NATS_NKEY, HAPPEN_NATS_CREDS, HAPPEN_NATS_CA, HAPPEN_NATS_CERT,
HAPPEN_NATS_KEY stand for the flags of the same name.";

/// What `happen --help` shows after the options: the exit codes, the duration forms, the
/// environment.
fn after_help() -> String {
    format!("{}\n\n{}\n\n{}", exit::help(), time::HELP, ENVIRONMENT)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", exit::one_line(&e));
            ExitCode::from(exit::code(&e))
        }
    }
}

async fn run(cli: Cli) -> happen::Result<()> {
    let conn = cli.conn;
    match cli.command {
        Command::Send(a) => send::send(&conn, a).await,
        Command::Broadcast(a) => send::broadcast(&conn, a).await,
        Command::Tap(a) => tap::tap(&conn, a).await,
        Command::Nodes(a) => nodes::nodes(&conn, a).await,
        Command::Trace(a) => trace::trace(&conn, a).await,
        Command::Bench(BenchCommand::Send(a)) => bench::send(&conn, a).await,
        Command::Bench(BenchCommand::Broadcast(a)) => bench::broadcast(&conn, a).await,
        Command::Web(a) => web::web(&conn, a).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn send_timeout(value: &str) -> Result<Duration, clap::Error> {
        let cli = Cli::try_parse_from(["happen", "send", "n", "t", "--timeout", value])?;
        match cli.command {
            Command::Send(a) => Ok(a.timeout),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn duration_flags_take_units_and_plain_seconds() {
        assert_eq!(send_timeout("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(send_timeout("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(send_timeout("1.5").unwrap(), Duration::from_millis(1500));
        let cli = Cli::try_parse_from(["happen", "send", "n", "t"]).unwrap();
        let Command::Send(a) = cli.command else {
            panic!("not a send")
        };
        assert_eq!(a.timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_bad_duration_is_a_usage_error_that_says_what_to_write() {
        let e = send_timeout("5x").unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(text.contains("unknown time unit \"x\""), "{text}");
        assert!(text.contains("`1m30s`"), "{text}");
    }

    #[test]
    fn help_shows_the_exit_codes_and_the_duration_forms() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("  14  timeout  "), "{help}");
        assert!(help.contains("  25  duplicate_handler  "), "{help}");
        assert!(help.contains("Durations"), "{help}");
        assert!(help.contains("HAPPEN_NATS_URL"), "{help}");
    }
}

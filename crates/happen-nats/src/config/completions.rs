//! `transport.nats.completion_records`.

use serde::{Deserialize, Serialize};

/// `transport.nats.completion_records`: whether this process's nodes publish a completion
/// record when the flow of a tell or a broadcast they took finishes (see `WIRE.md`,
/// "Completion records"). Requests need none: their reply is their completion.
///
/// ```
/// use happen_nats::CompletionRecords;
///
/// let config = happen::Config::from_toml_str(r#"
/// [transport.nats]
/// completion_records = "watched"
/// "#)?;
/// let nats = happen_nats::NatsConfig::from_happen(&config)?;
/// assert_eq!(nats.completion_records, CompletionRecords::Watched);
/// assert_eq!(happen_nats::NatsConfig::default().completion_records, CompletionRecords::Off);
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CompletionRecords {
    /// None (the default): a tell or broadcast pays one branch for the question.
    #[default]
    Off,
    /// Only while a watcher (`happen web` with a page open, `happen tap --record`) says it
    /// is looking: its beats on `<prefix>.watch` turn the records on for a few seconds. The
    /// process subscribes to the beats; with nobody watching the nodes publish nothing.
    Watched,
    /// Always (for a process under test, or a permanent recorder).
    Always,
}

//! Stored state in NATS JetStream key-value buckets: the [`StateStore`] of a NATS transport.
//!
//! async-nats' key-value API asks the server for its account info, which a 2.9 server does
//! not answer the way it expects, so this is key-value by hand on the plain stream API, in
//! the layout NATS key-value uses (and nats.js' `js.views.kv(bucket)` reads): stream
//! `KV_<bucket>` on subjects `$KV.<bucket>.>`, `max_msgs_per_subject` = history (at most 64),
//! rollup headers allowed, delete denied, discard new, direct get. A put publishes to
//! `$KV.<bucket>.<key>`, a compare-and-set adds `Nats-Expected-Last-Subject-Sequence`, a
//! delete publishes an empty message with `KV-Operation: DEL`; a get is a direct get of the
//! subject's last message; history and watch are ordered consumers filtered on the subject.
//! The causal context of a change travels in `Happen-*` headers ([`Change::HEADERS`]).
//! See `WIRE.md`, "Stored state".

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self, pull::OrderedConfig};
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{
    self, DirectGetErrorKind, DiscardPolicy, LastRawMessageErrorKind,
};
use async_nats::jetstream::{self, Context};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use happen::config::StateSettings;
use happen::transport::{Change, Entry, StateStore};
use happen::{Error, ErrorKind, Result};
use parking_lot::Mutex;

/// The JetStream API and publish-ack timeout.
const JS_TIMEOUT: Duration = Duration::from_secs(5);
/// The header naming a delete (`DEL`) or purge (`PURGE`) in NATS key-value.
const KV_OPERATION: &str = "KV-Operation";

/// NATS key-value buckets by hand (see the module docs).
pub(crate) struct KvStore {
    js: Context,
    /// Buckets found or created, by bucket name.
    streams: Mutex<HashMap<String, stream::Stream>>,
    /// Stream replicas of buckets this process creates.
    replicas: usize,
}

impl fmt::Debug for KvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStore").finish_non_exhaustive()
    }
}

fn kv_error(what: &str, e: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Transport,
        format!(
            "stored state: {what}: {e}; stored state over NATS needs a nats-server with JetStream enabled (`nats-server -js`)"
        ),
    )
}

fn subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// An entry from a stored message's sequence, headers and payload.
fn entry(sequence: u64, headers: Option<&HeaderMap>, payload: Bytes) -> Entry {
    let deleted = headers
        .and_then(|h| h.get(KV_OPERATION))
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
    let change = headers.and_then(|h| Change::from_headers(|name| h.get(name).map(|v| v.as_str())));
    let value = (!deleted).then(|| payload.to_vec());
    Entry::new(sequence, value, change)
}

impl KvStore {
    pub(crate) fn new(client: Client, replicas: usize) -> KvStore {
        KvStore {
            js: jetstream::ContextBuilder::new()
                .timeout(JS_TIMEOUT)
                .build(client),
            streams: Mutex::new(HashMap::new()),
            replicas: replicas.max(1),
        }
    }

    /// The bucket's stream, `None` if it does not exist (not remembered: it may be created
    /// later by its owner).
    async fn stream(&self, bucket: &str) -> Result<Option<stream::Stream>> {
        if let Some(s) = self.streams.lock().get(bucket) {
            return Ok(Some(s.clone()));
        }
        match self.js.get_stream(format!("KV_{bucket}")).await {
            Ok(s) => {
                self.streams.lock().insert(bucket.to_owned(), s.clone());
                Ok(Some(s))
            }
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(kv_error(&format!("cannot look up bucket `{bucket}`"), e)),
        }
    }

    async fn open_bucket(&self, bucket: &str, settings: StateSettings) -> Result<()> {
        if self.streams.lock().contains_key(bucket) {
            return Ok(());
        }
        let max_age = settings.max_age.unwrap_or(Duration::ZERO);
        let two_min = Duration::from_secs(120);
        let duplicate_window = if max_age.is_zero() || max_age > two_min {
            two_min
        } else {
            max_age
        };
        let s = self
            .js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: i64::from(settings.history),
                max_age,
                max_bytes: -1,
                max_messages: -1,
                max_message_size: -1,
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                deny_purge: false,
                allow_direct: true,
                discard: DiscardPolicy::New,
                duplicate_window,
                num_replicas: self.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| kv_error(&format!("cannot create bucket `{bucket}`"), e))?;
        self.streams.lock().insert(bucket.to_owned(), s);
        Ok(())
    }

    async fn get_entry(&self, bucket: &str, key: &str) -> Result<Option<Entry>> {
        let Some(s) = self.stream(bucket).await? else {
            return Ok(None);
        };
        let subject = subject(bucket, key);
        if s.cached_info().config.allow_direct {
            match s.direct_get_last_for_subject(subject).await {
                Ok(m) => Ok(Some(entry(m.sequence, Some(&m.headers), m.payload))),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(e) => Err(kv_error(&format!("cannot read `{bucket}`/`{key}`"), e)),
            }
        } else {
            match s.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => Ok(Some(entry(m.sequence, Some(&m.headers), m.payload))),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(kv_error(&format!("cannot read `{bucket}`/`{key}`"), e)),
            }
        }
    }

    async fn put_entry(
        &self,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        expect: Option<u64>,
        change: Option<&Change>,
    ) -> Result<u64> {
        let mut headers = HeaderMap::new();
        if let Some(c) = change {
            for (name, v) in c.to_headers() {
                headers.insert(name, v.as_str());
            }
        }
        let payload = match value {
            Some(v) => Bytes::from(v),
            None => {
                headers.insert(KV_OPERATION, "DEL");
                Bytes::new()
            }
        };
        let mut m = PublishMessage::build().payload(payload).headers(headers);
        if let Some(rev) = expect {
            m = m.expected_last_subject_sequence(rev);
        }
        let what = || format!("cannot store `{bucket}`/`{key}`");
        let ack = self
            .js
            .send_publish(subject(bucket, key), m)
            .await
            .map_err(|e| kv_error(&what(), e))?;
        match ack.await {
            Ok(a) => Ok(a.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "`{bucket}`/`{key}` is no longer at revision {}",
                    expect.unwrap_or(0)
                ),
            )),
            Err(e) => Err(kv_error(&what(), e)),
        }
    }

    /// An ordered consumer over the key's subject.
    async fn ordered(
        &self,
        s: &stream::Stream,
        bucket: &str,
        key: &str,
        deliver_policy: consumer::DeliverPolicy,
    ) -> Result<consumer::pull::Ordered> {
        let what = || format!("cannot read the revisions of `{bucket}`/`{key}`");
        s.create_consumer(OrderedConfig {
            filter_subject: subject(bucket, key),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| kv_error(&what(), e))?
        .messages()
        .await
        .map_err(|e| kv_error(&what(), e))
    }

    async fn history_of(&self, bucket: &str, key: &str) -> Result<Vec<Entry>> {
        // The last revision tells where to stop (and that there is something to read).
        let Some(last) = self.get_entry(bucket, key).await? else {
            return Ok(Vec::new());
        };
        let Some(s) = self.stream(bucket).await? else {
            return Ok(Vec::new());
        };
        let mut messages = self
            .ordered(&s, bucket, key, consumer::DeliverPolicy::All)
            .await?;
        let mut out = Vec::new();
        let what = || format!("cannot read the revisions of `{bucket}`/`{key}`");
        loop {
            let next = tokio::time::timeout(JS_TIMEOUT, messages.next())
                .await
                .map_err(|_| kv_error(&what(), "timed out"))?;
            let Some(m) = next else { break };
            let m = m.map_err(|e| kv_error(&what(), e))?;
            let (seq, pending) = m
                .info()
                .map(|i| (i.stream_sequence, i.pending))
                .map_err(|e| kv_error(&what(), e))?;
            out.push(entry(seq, m.headers.as_ref(), m.payload.clone()));
            if pending == 0 || seq >= last.revision {
                break;
            }
        }
        Ok(out)
    }

    async fn watch_key(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Entry>>> {
        let s = self.stream(bucket).await?.ok_or_else(|| {
            kv_error(
                &format!("cannot watch `{bucket}`/`{key}`"),
                "no such bucket",
            )
        })?;
        let messages = self
            .ordered(&s, bucket, key, consumer::DeliverPolicy::New)
            .await?;
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        Ok(messages
            .map(move |m| {
                let what = || format!("watching `{bucket}`/`{key}`");
                let m = m.map_err(|e| kv_error(&what(), e))?;
                let seq = m
                    .info()
                    .map(|i| i.stream_sequence)
                    .map_err(|e| kv_error(&what(), e))?;
                Ok(entry(seq, m.headers.as_ref(), m.payload.clone()))
            })
            .boxed())
    }
}

impl StateStore for KvStore {
    fn open<'a>(&'a self, bucket: &'a str, settings: StateSettings) -> BoxFuture<'a, Result<()>> {
        self.open_bucket(bucket, settings).boxed()
    }

    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        self.get_entry(bucket, key).boxed()
    }

    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: Option<Vec<u8>>,
        expect: Option<u64>,
        change: Option<&'a Change>,
    ) -> BoxFuture<'a, Result<u64>> {
        self.put_entry(bucket, key, value, expect, change).boxed()
    }

    fn history<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>> {
        self.history_of(bucket, key).boxed()
    }

    fn watch<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<Entry>>>> {
        self.watch_key(bucket, key).boxed()
    }
}

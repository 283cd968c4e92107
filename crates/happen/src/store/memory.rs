//! [`MemoryStore`]: the in-process [`StateStore`], used when the transport provides none.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;

use super::{Change, Entry, StateStore};
use crate::config::StateSettings;
use crate::error::{Error, ErrorKind, Result};

/// A [`StateStore`] in memory: what an instance without a state-storing transport uses (tests,
/// the quickstart). Its state lives as long as the store; it keeps `history` revisions per key
/// and drops those older than `max_age` as NATS does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::config::StateSettings;
/// use happen::transport::{MemoryStore, StateStore};
///
/// let store = MemoryStore::new();
/// store.open("b", StateSettings::default()).await?;
/// let rev = store.put("b", "k", Some(b"42".to_vec()), None, None).await?;
/// let entry = store.get("b", "k").await?.expect("stored");
/// assert_eq!((entry.revision, entry.value), (rev, Some(b"42".to_vec())));
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct MemoryStore {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    settings: StateSettings,
    /// The last revision given out in this bucket.
    seq: u64,
    keys: HashMap<String, Key>,
}

#[derive(Default)]
struct Key {
    entries: VecDeque<(Instant, Entry)>,
    /// The last revision of the key, kept when its entries aged out.
    last: u64,
    watchers: Vec<mpsc::UnboundedSender<Result<Entry>>>,
}

impl Key {
    fn prune(&mut self, settings: &StateSettings) {
        while self.entries.len() > settings.history as usize {
            self.entries.pop_front();
        }
        if let Some(age) = settings.max_age {
            while self.entries.front().is_some_and(|(t, _)| t.elapsed() > age) {
                self.entries.pop_front();
            }
        }
    }
}

impl MemoryStore {
    /// An empty store.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::transport::{MemoryStore, StateStore};
    /// assert!(MemoryStore::new().get("any", "key").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn put_now(
        &self,
        bucket: &str,
        key: &str,
        value: Option<Vec<u8>>,
        expect: Option<u64>,
        change: Option<&Change>,
    ) -> Result<u64> {
        let mut buckets = self.buckets.lock();
        let b = buckets.get_mut(bucket).ok_or_else(|| {
            Error::new(
                ErrorKind::Transport,
                format!("state bucket `{bucket}` was not opened"),
            )
        })?;
        let settings = b.settings;
        let k = b.keys.entry(key.to_owned()).or_default();
        k.prune(&settings);
        if let Some(expect) = expect
            && expect != k.last
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("`{bucket}`/`{key}` is at revision {}, not {expect}", k.last),
            ));
        }
        b.seq += 1;
        let entry = Entry::new(b.seq, value, change.cloned());
        k.last = b.seq;
        k.watchers
            .retain(|w| w.unbounded_send(Ok(entry.clone())).is_ok());
        k.entries.push_back((Instant::now(), entry));
        k.prune(&settings);
        Ok(b.seq)
    }
}

impl StateStore for MemoryStore {
    fn open<'a>(&'a self, bucket: &'a str, settings: StateSettings) -> BoxFuture<'a, Result<()>> {
        self.buckets
            .lock()
            .entry(bucket.to_owned())
            .or_insert_with(|| Bucket {
                settings,
                seq: 0,
                keys: HashMap::new(),
            });
        futures::future::ready(Ok(())).boxed()
    }

    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        let mut buckets = self.buckets.lock();
        let entry = buckets.get_mut(bucket).and_then(|b| {
            let settings = b.settings;
            let k = b.keys.get_mut(key)?;
            k.prune(&settings);
            k.entries.back().map(|(_, e)| e.clone())
        });
        futures::future::ready(Ok(entry)).boxed()
    }

    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: Option<Vec<u8>>,
        expect: Option<u64>,
        change: Option<&'a Change>,
    ) -> BoxFuture<'a, Result<u64>> {
        futures::future::ready(self.put_now(bucket, key, value, expect, change)).boxed()
    }

    fn history<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>> {
        let mut buckets = self.buckets.lock();
        let entries = buckets
            .get_mut(bucket)
            .and_then(|b| {
                let settings = b.settings;
                let k = b.keys.get_mut(key)?;
                k.prune(&settings);
                Some(k.entries.iter().map(|(_, e)| e.clone()).collect())
            })
            .unwrap_or_default();
        futures::future::ready(Ok(entries)).boxed()
    }

    fn watch<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<Entry>>>> {
        let (tx, rx) = mpsc::unbounded();
        let mut buckets = self.buckets.lock();
        let out = match buckets.get_mut(bucket) {
            Some(b) => {
                b.keys.entry(key.to_owned()).or_default().watchers.push(tx);
                Ok(rx.boxed())
            }
            None => Err(Error::new(
                ErrorKind::Transport,
                format!("state bucket `{bucket}` was not opened"),
            )),
        };
        futures::future::ready(out).boxed()
    }
}

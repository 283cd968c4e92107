//! [`StoreHub`]: an instance's state store, its settings, which buckets are open, and one
//! lock per key so this process's writers take turns (only other processes conflict).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;

use super::StateStore;
use crate::config::{StateConfig, StateSettings};
use crate::error::Result;

/// One key's local lock, with the last revision this process wrote or read under it (the
/// next update tries it first and reads only after a conflict), and its conflict count.
pub(crate) struct Cell {
    pub(crate) last: tokio::sync::Mutex<Option<(Vec<u8>, u64)>>,
    pub(crate) conflicts: AtomicU64,
}

/// What every typed handle of an instance shares.
pub(crate) struct StoreHub {
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) config: StateConfig,
    opened: Mutex<HashSet<String>>,
    /// By bucket, then key (looked up without allocating).
    cells: Mutex<HashMap<String, HashMap<String, Arc<Cell>>>>,
}

impl StoreHub {
    pub(crate) fn new(store: Arc<dyn StateStore>, config: StateConfig) -> StoreHub {
        StoreHub {
            store,
            config,
            opened: Mutex::new(HashSet::new()),
            cells: Mutex::new(HashMap::new()),
        }
    }

    /// Opens `bucket` once per instance.
    pub(crate) async fn ensure(&self, bucket: &str, settings: StateSettings) -> Result<()> {
        if self.opened.lock().contains(bucket) {
            return Ok(());
        }
        self.store.open(bucket, settings).await?;
        self.opened.lock().insert(bucket.to_owned());
        Ok(())
    }

    /// The settings of the global bucket: `[state]` without patterns.
    pub(crate) fn global_settings(&self) -> StateSettings {
        StateSettings::new(self.config.history).with_max_age(self.config.max_age)
    }

    pub(crate) fn cell(&self, bucket: &str, key: &str) -> Arc<Cell> {
        let mut cells = self.cells.lock();
        if let Some(c) = cells.get(bucket).and_then(|keys| keys.get(key)) {
            return c.clone();
        }
        cells
            .entry(bucket.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(Cell {
                    last: tokio::sync::Mutex::new(None),
                    conflicts: AtomicU64::new(0),
                })
            })
            .clone()
    }
}

//! Node-level shared state: values given to a node at creation, readable by every flow.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

/// One value per type, shared by every flow of a node (see
/// [`NodeOptions::state`](crate::NodeOptions::state)). Immutable once the node exists; a node
/// holds a handful of entries at most, so a list beats a map.
#[derive(Clone, Default)]
pub(crate) struct StateMap {
    entries: Vec<StateEntry>,
}

#[derive(Clone)]
struct StateEntry {
    type_id: TypeId,
    type_name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

impl StateMap {
    /// Adds `value`, replacing an earlier value of the same type.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let entry = StateEntry {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            value: Arc::new(value),
        };
        match self.entries.iter_mut().find(|e| e.type_id == entry.type_id) {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
    }

    /// The value of type `T`, if one was given.
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.entries
            .iter()
            .find(|e| e.type_id == TypeId::of::<T>())
            .and_then(|e| e.value.downcast_ref::<T>())
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Type names only: state often holds clients whose `Debug` would print credentials.
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.type_name))
            .finish()
    }
}

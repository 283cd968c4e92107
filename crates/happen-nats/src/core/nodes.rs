//! This process's attached nodes: their inboxes and serve tasks, and the last `node.pressure`
//! report of each (for the `Happen-Pressure` header of its replies).

use std::collections::{HashMap, HashSet};

use happen::transport::Inbox;
use happen::{NodeId, Pressure};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An attached node: its inbox and its serve task.
pub(crate) struct NodeHandle {
    /// Stops the serve task.
    pub(crate) stop: oneshot::Sender<()>,
    pub(crate) task: JoinHandle<()>,
    pub(crate) inbox: Inbox,
}

impl NodeHandle {
    /// Tells the serve task to stop; returns it, to wait for it.
    pub(crate) fn stop(self) -> JoinHandle<()> {
        let _ = self.stop.send(());
        self.task
    }
}

/// This process's nodes (see the module docs).
#[derive(Default)]
pub(crate) struct LocalNodes {
    handles: Mutex<HashMap<NodeId, NodeHandle>>,
    /// The last `node.pressure` report (seq, state) of each local node.
    reports: Mutex<HashMap<NodeId, (u64, Pressure)>>,
    /// Nodes removed whose serve task still runs (answering what it took): still named in
    /// this process's heartbeats until it ends.
    stopping: Mutex<HashSet<NodeId>>,
}

impl LocalNodes {
    /// Adds an attached node.
    pub(crate) fn insert(&self, id: NodeId, handle: NodeHandle) {
        self.handles.lock().insert(id, handle);
    }

    /// Removes a node (to stop it); it counts as served until [`stopped`](LocalNodes::stopped).
    pub(crate) fn remove(&self, id: &NodeId) -> Option<NodeHandle> {
        let h = self.handles.lock().remove(id)?;
        self.stopping.lock().insert(id.clone());
        Some(h)
    }

    /// Removes every node (the transport shuts down).
    pub(crate) fn drain(&self) -> Vec<NodeHandle> {
        let drained: Vec<(NodeId, NodeHandle)> = self.handles.lock().drain().collect();
        let mut stopping = self.stopping.lock();
        drained
            .into_iter()
            .map(|(id, h)| {
                stopping.insert(id);
                h
            })
            .collect()
    }

    /// The serve task of a removed node ended.
    pub(crate) fn stopped(&self, id: &NodeId) {
        self.stopping.lock().remove(id);
    }

    /// The ids of the nodes this process serves: attached, or stopping and still answering
    /// (sorted, for the heartbeat).
    pub(crate) fn served(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.handles.lock().keys().cloned().collect();
        ids.extend(self.stopping.lock().iter().cloned());
        ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.dedup();
        ids
    }

    /// How many nodes are attached.
    pub(crate) fn len(&self) -> usize {
        self.handles.lock().len()
    }

    /// The inbox of node `id`, if attached here.
    pub(crate) fn inbox(&self, id: &NodeId) -> Option<Inbox> {
        self.handles.lock().get(id).map(|h| h.inbox.clone())
    }

    /// The inboxes of every node (for discovery).
    pub(crate) fn inboxes(&self) -> Vec<Inbox> {
        self.handles
            .lock()
            .values()
            .map(|h| h.inbox.clone())
            .collect()
    }

    /// The inboxes of the nodes that have a handler for `event_type`.
    pub(crate) fn accepting(&self, event_type: &str) -> Vec<Inbox> {
        self.inboxes()
            .into_iter()
            .filter(|i| i.accepts(event_type))
            .collect()
    }

    /// Does a node of this process stream broadcasts of `event_type`?
    pub(crate) fn streams(&self, event_type: &str) -> bool {
        self.handles
            .lock()
            .values()
            .any(|h| h.inbox.receives_broadcasts() && h.inbox.streams(event_type))
    }

    /// Remembers report `seq` of node `id` unless a later one is known.
    pub(crate) fn record_report(&self, id: &NodeId, seq: u64, pressure: Pressure) {
        let mut reports = self.reports.lock();
        let entry = reports.entry(id.clone()).or_insert((seq, pressure));
        if seq >= entry.0 {
            *entry = (seq, pressure);
        }
    }

    /// The last report of node `id`.
    pub(crate) fn report(&self, id: &NodeId) -> Option<(u64, Pressure)> {
        self.reports.lock().get(id).copied()
    }

    /// Forgets the reports of node `id` (it stops); did it ever report?
    pub(crate) fn forget_reports(&self, id: &NodeId) -> bool {
        self.reports.lock().remove(id).is_some()
    }
}

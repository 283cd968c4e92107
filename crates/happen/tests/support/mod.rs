//! Helpers shared by the integration tests (each test file includes this with `mod support;`).
#![allow(dead_code)] // not every test file uses every helper

use std::time::{Duration, Instant};

/// How long a test waits for a condition before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Yields until `cond` holds. Bounded by real time, so it cannot hang under paused tokio time.
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
    }
}

/// Awaits every spawned task (re-raising a task's panic) within [`PATIENCE`].
pub(crate) async fn join_all_within(what: &str, tasks: Vec<tokio::task::JoinHandle<()>>) {
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(PATIENCE, all)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PATIENCE:?}: {what}"));
}

/// Installs (once per test binary) a panic hook that stays quiet for panics whose message
/// contains "intentional" and prints every other panic, so real assertion failures still show.
pub(crate) fn quiet_intentional_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.contains("intentional") {
                default(info);
            }
        }));
    });
}

/// A latch that blocks OS threads (std primitives, no await) until the test opens it: for
/// handlers and CPU jobs that must really hold their thread.
#[derive(Default)]
pub(crate) struct Latch {
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Latch {
    /// Blocks the calling thread until the latch is open.
    pub(crate) fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }

    /// Opens the latch, releasing every waiting thread.
    pub(crate) fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Opens the latch when dropped, so a failing assertion never leaves threads blocked.
pub(crate) struct OpenOnDrop(pub(crate) std::sync::Arc<Latch>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

//! [`Ready`]: the future of [`Node::ready`](super::Node::ready).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::admission::Pressure;
use crate::error::{Error, ErrorKind, Result};
use crate::id::NodeId;

/// A future that resolves once a target is not under backpressure (see [`Node::ready`](crate::Node::ready)).
///
/// # Cancel safety
/// Cancel-safe: it only watches the target's state, so dropping it has no effect.
#[must_use = "futures do nothing unless awaited"]
pub struct Ready {
    pressure: Option<watch::Receiver<Pressure>>,
    target: NodeId,
    wait: Duration,
    waiting: Option<BoxFuture<'static, Result<()>>>,
}

impl Ready {
    pub(super) fn new(
        pressure: Option<watch::Receiver<Pressure>>,
        target: NodeId,
        wait: Duration,
    ) -> Ready {
        Ready {
            pressure,
            target,
            wait,
            waiting: None,
        }
    }

    /// Waits at most `wait` (instead of the node's request timeout).
    ///
    /// # Errors
    /// The future fails with [`ErrorKind::Timeout`] if the target stays under pressure for
    /// the whole wait.
    pub fn timeout(mut self, wait: Duration) -> Ready {
        self.wait = wait;
        self
    }
}

impl Future for Ready {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        if this.waiting.is_none() {
            let Some(mut rx) = this.pressure.take() else {
                return Poll::Ready(Ok(()));
            };
            if !rx.borrow().under_pressure {
                return Poll::Ready(Ok(()));
            }
            let (target, wait) = (this.target.clone(), this.wait);
            this.waiting = Some(Box::pin(async move {
                match tokio::time::timeout(wait, rx.wait_for(|p| !p.under_pressure)).await {
                    // A closed watch: the target went away; a send says how.
                    Ok(_) => Ok(()),
                    Err(_) => Err(Error::new(
                        ErrorKind::Timeout,
                        format!("node `{target}` stayed under backpressure for {wait:?}"),
                    )
                    .with_node(&target)),
                }
            }));
        }
        match this.waiting.as_mut() {
            Some(f) => f.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl fmt::Debug for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("target", &self.target)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

//! The node's runtime: its drivers, and one flow (the Event Continuum runner).
//!
//! - [`driver`]: events holding a slot are started by the node's drivers; flows that wait move
//!   to their own task (see that module for why).
//! - [`flow_task`]: one flow inside its panic boundary: runs its steps, answers the sender and
//!   gives the slot back.

mod driver;
mod flow_task;

pub(crate) use driver::{Here, Runner, StartLock, run_here_caught, start_for_requester};

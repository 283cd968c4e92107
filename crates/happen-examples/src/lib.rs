//! Runnable examples of the `happen` event framework.
//!
//! This crate has no library API of its own; the programs live in `examples/`. Run one from the
//! workspace root with `cargo run --release --example <name>` (for example `quickstart`).

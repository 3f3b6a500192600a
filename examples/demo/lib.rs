//! The demo of tower-bearer lives next to this file, in a package of its
//! own so that its first build compiles only what it needs:
//!
//! ```sh
//! cargo run --example demo
//! ```

//! The runnable examples of tower-bearer live next to this file; this
//! package exists so that each builds with only what it needs:
//!
//! ```sh
//! cargo run --example demo
//! cargo run --example tonic_health --features tonic
//! ```

//! The criterion benchmarks of tower-bearer live next to this file; results
//! and commands are in BENCHMARKS.md:
//!
//! ```sh
//! cargo bench -p tower-bearer-benches --bench hot_path
//! cargo bench -p tower-bearer-benches --features redis --bench fleet
//! ```

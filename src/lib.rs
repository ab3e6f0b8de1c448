//! The `atlas` command line as a library: `src/main.rs` runs it, and a
//! binary that links further modules (the crash-test fixture in
//! `examples/crash-fixture`) runs the very same commands.

mod backup;
pub mod cli;
mod init;
mod modules;

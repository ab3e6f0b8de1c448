//! The build script of every crate that embeds its `migrations/` folder
//! with `include_dir!` (named by the `build` key of its `Cargo.toml`).
//!
//! `include_dir!` embeds the folder file by file, so Cargo rebuilds the
//! crate when one of those files changes but not when one is added: a new
//! migration would be missing from an incremental build. Watching the
//! folder (a path relative to the crate being built) makes any change to
//! it, a new file included, rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

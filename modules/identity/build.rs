//! `include_dir!` embeds `migrations/` file by file, so Cargo rebuilds this
//! crate when one of those files changes but not when one is added: a new
//! migration would be missing from an incremental build. Watching the
//! folder makes any change to it, a new file included, rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

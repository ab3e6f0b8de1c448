//! Packs the `atlas` executable's relative relocations (DT_RELR): the table
//! the dynamic loader reads at every start shrinks from about 3 MB to 40 KB,
//! and so does the resident memory it took.
//!
//! Only where the C library can load such an executable: a native build for
//! x86_64 or aarch64 Linux against glibc 2.36 or newer (`getconf
//! GNU_LIBC_VERSION`). Elsewhere the executable is linked as before. GNU ld
//! older than 2.38 ignores the option with a warning.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    let linux = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"].contains(&target.as_str());
    if linux && target == host && glibc_version().is_some_and(|v| v >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The host's glibc version, from `getconf` ("glibc 2.36").
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, rest) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = rest.split('.').next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

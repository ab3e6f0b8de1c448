//! The `atlas` command line: a thin shell over the kernel and the modules.

// mimalloc instead of glibc's malloc: under concurrent load glibc gives each
// busy thread an arena of its own and returns little of it, so the server's
// resident memory tripled during a write benchmark; mimalloc keeps it near
// the live heap (figures in bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's option enum (`mimalloc.h`); the
/// Rust bindings do not name it. A unit test checks its default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Give freed pages back to the OS at once rather than after a second:
    // the server's idle memory drops by a third (87 → 60 MB) and its peak
    // under a write load by a fifth, for some throughput (page faults; see
    // docs/configuration.md, "Memory allocator"). `MIMALLOC_PURGE_DELAY`
    // in the environment, which mimalloc reads itself, wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer option; any value is
        // valid for this option and mimalloc reads it atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    // No transparent huge pages: mimalloc asks for them on its regions, and
    // then a 2 MiB page stays resident for a few live objects. Peak memory
    // during item creates drops by a sixth (117 → 97 MiB) at the same
    // throughput (bench/RESULTS.md).
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag
    // of this process; a failure (an old kernel) leaves things as they were.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
    };
    limit_c_arenas();
    atlas::cli::main()
}

/// Glibc arenas for C allocations (SQLite's page caches and statements):
/// at most two, where glibc gives up to eight per core, one to each thread
/// that allocates while another holds its arena. Each arena keeps what its
/// threads freed; with two, a list load after seeding 10,000 items peaks
/// about 3 MiB lower, at the same create and list throughput
/// (bench/RESULTS.md). `MALLOC_ARENA_MAX` in the environment, which glibc
/// reads itself, wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_c_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt takes plain integers; it runs before any thread
        // but this one exists, and a refused value changes nothing.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, C_ARENAS) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_c_arenas() {}

/// Glibc arenas at most (see `limit_c_arenas`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const C_ARENAS: libc::c_int = 2;

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc 3's default purge delay is 1000 ms (its options.c).
        // SAFETY: reading an option has no preconditions.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_arena_limit() {
        // SAFETY: as in `limit_c_arenas`; mallopt returns 1 on success.
        assert_eq!(unsafe { libc::mallopt(libc::M_ARENA_MAX, super::C_ARENAS) }, 1);
    }
}

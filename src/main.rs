//! The `atlas` command line: a thin shell over the kernel and the modules.

// mimalloc instead of glibc's malloc: under concurrent load glibc gives each
// busy thread an arena of its own and returns little of it, so the server's
// resident memory tripled during a write benchmark; mimalloc keeps it near
// the live heap (figures in bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    atlas::cli::main()
}

//! The `atlas` command line: a thin shell over the kernel and the modules.

mod cli;
mod modules;

/// mimalloc instead of the system allocator: with many threads (request
/// workers, one per SQLite connection) glibc's per-thread arenas grow the
/// resident set; mimalloc keeps it lower and allocates faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}

//! The `atlas` command line: a thin shell over the kernel and the modules.

fn main() -> std::process::ExitCode {
    atlas::cli::main()
}

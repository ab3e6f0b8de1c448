//! `atlas` with the crash recorder linked in.

use atlas_crash_fixture as _;

fn main() -> std::process::ExitCode {
    atlas::cli::main()
}

//! The `atlas` command line: a thin shell over the kernel and the modules.

mod cli;
mod modules;

fn main() -> std::process::ExitCode {
    cli::main()
}

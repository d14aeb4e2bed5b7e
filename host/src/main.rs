//! The `host` command.

fn main() -> std::process::ExitCode {
    wasaga_host::cli::main()
}

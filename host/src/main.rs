//! The `host` command.

#[global_allocator]
static ALLOCATOR: wasaga_host::Allocator = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    wasaga_host::cli::main()
}

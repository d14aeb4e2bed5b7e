//! The `host` command.

#[global_allocator]
static ALLOCATOR: wasaga_host::Allocator = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    without_huge_pages();
    wasaga_host::cli::main()
}

/// Turns transparent huge pages off for the process (`WASAGA_THP=1` keeps
/// them): mimalloc asks for them on its arenas, and each one is 2 MiB
/// zeroed and resident at its first touch. Measured: `host run` of a
/// 3-step workflow peaks at 29.6 MB instead of 36.9 MB and starts no slower;
/// under load (100 durable runs in flight) no difference beyond the noise.
/// The flag is inherited: subscriber commands and `build` commands the host
/// starts run without them too.
///
/// It comes too late for what is allocated before `main` (mimalloc's first
/// arena): mimalloc is therefore built with its `no_thp` feature, so that
/// it never advises huge pages itself (with the kernel's usual `madvise`
/// mode, nothing of the process then gets them; `host --version` peaks at
/// 10.6 MB instead of 13.2). `WASAGA_THP=1` only matters where the kernel
/// gives huge pages unasked (`always`).
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("WASAGA_THP").is_none_or(|v| v != "1") {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a
        // flag on this process's memory; a failure leaves THP as it was.
        unsafe {
            let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused);
        }
    }
}

//! The `perseus` daemon entry point: everything lives in the library so it can be tested.

fn main() -> std::process::ExitCode {
    fix_mmap_threshold();
    perseus::cli::main()
}

/// Every password verification runs scrypt, which allocates 128·N·r bytes (16 MiB for the
/// standard N=16384, r=8) on a blocking-pool thread and frees it ~50 ms later. glibc's default
/// mmap threshold is dynamic: once the first such block is freed it rises to that size, so
/// later ones come from the per-thread arenas and stay resident when freed (about 100 MiB
/// after a burst of logins, never given back). Fixing the threshold turns that off: those
/// blocks are mmap'd each time and unmapped on free, at a cost in page faults that scrypt's
/// own work dwarfs, and the trim threshold stays at its 128 KiB default. 4 MiB is far above
/// the buffers the data path keeps (16 KiB read chunks, writes paused near 256 KiB), so
/// besides scrypt only a rare huge single message is affected. One call before any thread
/// starts, rather than malloc_trim after verifications, which walks every arena under its
/// lock while clients run.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Blocks at least this large always come from mmap and go back when freed.
        const MMAP_THRESHOLD: libc::c_int = 4 << 20;
        // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

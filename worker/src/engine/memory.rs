//! Keeps the memory of freed tensors in the process for the next ones.
//!
//! tract allocates each intermediate tensor of a segment afresh: up to 66 MB apiece for htdemucs,
//! hundreds per segment. glibc serves blocks that large with their own `mmap` and gives them back
//! with `munmap` on free, so the next tensor faults in every 4 KiB page again. Measured here: an
//! elementwise pass over 66 MB takes 193 ms on fresh pages and 4.5 ms on reused ones, and one
//! htdemucs segment went from 6.7 s to 4.5 s with the blocks kept (`make bench-profile`). jemalloc
//! and mimalloc (tried through LD_PRELOAD, with and without their purging turned off) were slower
//! than this on the same segment.
//!
//! The cost is that the heap keeps its high-water mark: the worker's resident memory stays at its
//! peak between songs instead of shrinking back, which `make bench` reports as peak RSS.

use std::sync::Once;

/// Makes glibc serve large blocks from the heap and not trim it. Process-wide; idempotent. Does
/// nothing on other C libraries.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; called once, before the engine's
        // threads allocate anything large.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    });
}

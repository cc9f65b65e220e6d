//! Keeps the memory of freed tensors in the process for the next ones.
//!
//! tract allocates each intermediate tensor of a segment afresh, many of them tens of MB. glibc
//! serves blocks that large with their own `mmap` and gives them back with `munmap` on free, so
//! the next tensor faults in every 4 KiB page again, which costs a large share of a segment
//! (README.md, "Memory", has the measurement; jemalloc and mimalloc were slower still). Serving
//! them from a heap that is never trimmed avoids it, at the cost of the heap keeping its
//! high-water mark: a worker's resident memory stays at its peak between songs, which
//! `make bench` reports as peak RSS.

/// Makes glibc serve large blocks from the heap and never trim it. Process-wide; does nothing on
/// other C libraries. A binary that runs the engine calls it first thing in `main`.
///
/// # Safety
///
/// Call it before the process starts any thread: glibc documents `mallopt` as MT-Unsafe until
/// it has run once in a single-threaded process.
pub unsafe fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: the caller guarantees no other thread exists yet (this function's contract), which
    // is what glibc requires of mallopt; the two calls only set allocator thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

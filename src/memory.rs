//! Giving freed heap memory back to the system.
//!
//! glibc's allocator keeps what is freed in the middle of its heap for
//! later allocations; it only returns the top. When a large index is
//! dropped piece by piece while its replacement is built (the squash tree
//! drained into the plan of the output layer), the pages of both would
//! count at once. [`release_freed`] hands the freed pages back, so peak
//! memory is the larger of the two, not their sum.

/// Returns the heap pages glibc holds free to the system (`malloc_trim`);
/// a no-op with other allocators. Costs a walk of the free lists: call it
/// every few tens of thousands of frees, not per free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_freed() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // heap; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed() {}

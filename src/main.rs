//! The `slim` binary: parse arguments, set up logging, run, print the error
//! chain and exit with a documented code (0 ok, 1 failure, 2 usage, 3
//! threshold not met).

use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    slim::cli::main()
}

/// glibc gives every thread that allocates an arena of its own (up to 8 per
/// core) and keeps what is freed there for that thread: slim's stage
/// threads (download, decode, encode, upload, per layer) left tens of MB
/// each behind. Two arenas: peak RSS of the corpus images 103 -> 71 MB
/// (python-app) and 118 -> 86 MB (node-app), same wall time. An explicit
/// `MALLOC_ARENA_MAX` in the environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; no other thread exists
        // yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// musl's allocator has no per-thread arenas.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

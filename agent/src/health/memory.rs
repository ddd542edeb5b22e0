//! Gives the system back the memory the allocator keeps but no longer uses.
//!
//! A gateway runs for months. glibc's malloc keeps what is freed in its
//! per-thread arenas for reuse, and raises its mmap threshold each time a
//! large block is freed, so the 3 MB frames come to be carved from the
//! arenas too: the resident size climbed about 50 MB in 30 to 50 minutes
//! of `scripts/soak` (185 to 231 MB) while the live heap stayed flat at
//! 70 MB (heaptrack over the same run). `malloc_trim` hands the free pages
//! back (the middle of each arena too, since glibc 2.8), once a minute,
//! which costs milliseconds.

use std::time::Duration;

use crate::shutdown::Shutdown;

pub const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Starts the thread that trims every [`TRIM_EVERY`] until shutdown.
pub fn start_trimming(shutdown: Shutdown) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("matthan-trim".into())
        .spawn(move || {
            while !shutdown.sleep_or_stop(TRIM_EVERY) {
                trim();
            }
        })
}

/// Returns the free memory of every arena to the system.
pub fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What trimming saves is measured by `scripts/soak`, not asserted here.
    #[test]
    fn the_trimming_thread_ends_with_shutdown() {
        let shutdown = Shutdown::new();
        let thread = start_trimming(shutdown.clone()).unwrap();
        trim();
        shutdown.trigger();
        let started = std::time::Instant::now();
        thread.join().unwrap();
        assert!(started.elapsed() < TRIM_EVERY / 2);
    }
}

//! Where the package's time came from: the kernel's view of its clock
//! discipline (`adjtimex`), which NTP, chrony and systemd-timesyncd all
//! keep up to date. An officer must be able to tell a synchronised clock
//! from one that drifted since the last power cut.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ClockState {
    pub source: &'static str,
    /// The kernel says the clock is synchronised to a time source.
    pub synchronized: bool,
    /// The kernel's bound on the clock's error, milliseconds.
    pub max_error_ms: f64,
    pub estimated_error_ms: f64,
}

pub fn clock_state() -> ClockState {
    // SAFETY: adjtimex with modes = 0 only reads; the struct is plain data.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    let unsynced = state < 0 || state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0;
    ClockState {
        source: "system clock (kernel adjtimex)",
        synchronized: !unsynced,
        max_error_ms: tx.maxerror as f64 / 1000.0,
        estimated_error_ms: tx.esterror as f64 / 1000.0,
    }
}

//! Clocks shared by every generator process: a system-wide monotonic clock
//! (so a send time written by the publisher process can be compared with a
//! receive time in a subscriber process) and the process's own CPU time.

/// Nanoseconds of `CLOCK_MONOTONIC`, the same in every process on the host.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU time this process has used (getrusage(RUSAGE_SELF)).
pub fn self_cpu_ns() -> u64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

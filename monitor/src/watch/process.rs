//! The daemon's own footprint, as Prometheus client libraries export it
//! (`process_*`, the names of the Prometheus client conventions), read from
//! `/proc/self`.

use std::fs;

/// The process figures of one scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads this process's figures; `None` when `/proc` is unreadable.
    pub fn read() -> Option<Self> {
        let stat = fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (ticks, page) = (u64::try_from(ticks).ok()?, u64::try_from(page).ok()?);
        let fields = StatFields::parse(&stat)?;
        // The directory handle read_dir holds is one of the fds it lists.
        let open_fds = fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid resource and a valid out pointer.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        Some(Self {
            cpu_seconds: (fields.utime + fields.stime) as f64 / ticks as f64,
            resident_memory_bytes: fields.rss_pages * page,
            virtual_memory_bytes: fields.vsize,
            open_fds: open_fds as u64,
            max_fds,
            start_time_seconds: boot_time as f64 + fields.starttime as f64 / ticks as f64,
        })
    }
}

/// The fields of `/proc/<pid>/stat` used here (proc(5) numbering).
#[derive(Debug, PartialEq, Eq)]
struct StatFields {
    /// (14) user-mode clock ticks.
    utime: u64,
    /// (15) kernel-mode clock ticks.
    stime: u64,
    /// (22) start time after boot, in clock ticks.
    starttime: u64,
    /// (23) virtual memory size in bytes.
    vsize: u64,
    /// (24) resident set size in pages.
    rss_pages: u64,
}

impl StatFields {
    /// Parses a `stat` line. The command name (2) may hold spaces and parentheses,
    /// so fields are counted from its last `)`.
    fn parse(stat: &str) -> Option<Self> {
        let after_comm = &stat[stat.rfind(')')? + 1..];
        // after_comm starts with field 3 (state).
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "4242 (rout) emon x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 50 0 0 20 0 1 0 12345 26214400 6400 18446744073709551615";
        assert_eq!(
            StatFields::parse(stat),
            Some(StatFields {
                utime: 150,
                stime: 50,
                starttime: 12345,
                vsize: 26_214_400,
                rss_pages: 6400,
            })
        );
    }

    #[test]
    fn this_process_reads_plausibly() {
        let stats = ProcessStats::read().expect("/proc is mounted");
        assert!(stats.resident_memory_bytes > 1 << 20);
        assert!(stats.open_fds >= 3, "{stats:?}");
        assert!(stats.max_fds >= stats.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stats.start_time_seconds <= now + 1.0 && stats.start_time_seconds > now - 3600.0);
    }
}

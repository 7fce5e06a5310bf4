//! Resource use of processes on this machine, from `/proc`.

use std::time::Instant;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on
/// every Linux this runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU seconds used so far (`utime + stime` of `/proc/<pid>/stat`).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU seconds of a set of processes, summed (missing processes count 0).
pub(crate) fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

pub(crate) fn total_rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| rss_bytes(p)).sum()
}

/// CPU used by groups of processes between two points in time.
#[derive(Debug, Clone)]
pub(crate) struct CpuMeter {
    groups: Vec<Vec<u32>>,
    start: Vec<f64>,
    at: Instant,
}

impl CpuMeter {
    pub(crate) fn start(groups: Vec<Vec<u32>>) -> Self {
        let start = groups.iter().map(|g| total_cpu(g)).collect();
        Self {
            groups,
            start,
            at: Instant::now(),
        }
    }

    /// CPU seconds each group used since `start`, and the wall seconds.
    pub(crate) fn read(&self) -> (Vec<f64>, f64) {
        let used = self
            .groups
            .iter()
            .zip(&self.start)
            .map(|(g, s)| (total_cpu(g) - s).max(0.0))
            .collect();
        (used, self.at.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|r| r > 0));
        assert!(cpu_seconds(me).is_some());
    }
}

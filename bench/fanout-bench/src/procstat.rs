//! Resource use of processes on this machine, from `/proc` (through the
//! `procfs` crate, the /proc reader the server uses too).

use std::time::Instant;

use procfs::process::Process;

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// Resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let kib = process(pid)?.status().ok()?.vmrss?;
    Some(kib * 1024)
}

/// User + system CPU seconds used so far (`utime + stime` of `/proc/<pid>/stat`).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = process(pid)?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// Open file descriptors (entries of `/proc/<pid>/fd`).
pub(crate) fn fd_count(pid: u32) -> Option<u64> {
    process(pid)?.fd_count().ok().map(|n| n as u64)
}

/// Bytes waiting in the kernel's send queues (`tx_queue` of
/// `/proc/net/tcp`) of the established TCP sockets on each of `ports`
/// (local port): what a node wrote to its clients that they have not
/// acknowledged yet. One read of the table for all ports; `None` if it
/// cannot be read.
pub(crate) fn send_queues(ports: &[u16]) -> Option<Vec<u64>> {
    let table = procfs::net::tcp().ok()?;
    let mut out = vec![0u64; ports.len()];
    for e in table
        .iter()
        .filter(|e| e.state == procfs::net::TcpState::Established)
    {
        if let Some(i) = ports.iter().position(|&p| p == e.local_address.port()) {
            out[i] += u64::from(e.tx_queue);
        }
    }
    Some(out)
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
        // Beyond pid_max (2^22): no such process, no reading.
        assert_eq!(rss_bytes(1 << 23), None);
        assert_eq!(cpu_seconds(u32::MAX), None);
        assert!(fd_count(me).is_some_and(|n| n >= 3));
        assert_eq!(fd_count(1 << 23), None);
        // A listener has no established socket: nothing queued on its port.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(send_queues(&[port]), Some(vec![0]));
    }
}

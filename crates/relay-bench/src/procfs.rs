//! Counters read from /proc, for what the load generator cannot see itself: the relay's CPU time,
//! each core's busy time, and the kernel's UDP drops.

use std::collections::HashSet;
use std::fs;

/// CPU time (ns) of every thread of process `pid` (sum of /proc/PID/task/*/schedstat, first
/// field: time spent on a CPU). None when the process is gone.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let dir = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in dir.flatten() {
        let Ok(s) = fs::read_to_string(task.path().join("schedstat")) else {
            continue; // the thread exited meanwhile
        };
        if let Some(v) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += v;
            any = true;
        }
    }
    any.then_some(total)
}

/// Jiffies of one CPU (from /proc/stat).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// Everything but idle and iowait (interrupts, softirqs and steal included).
    pub busy: u64,
    /// Time charged to tasks: user + nice + system. Softirq time (on loopback, most of the
    /// kernel's receive path) is not in it, nor in any task's CPU time.
    pub task: u64,
    pub total: u64,
}

/// The jiffies of each CPU.
pub fn cpu_times() -> Vec<CpuTimes> {
    let Ok(s) = fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in s.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let Some(idx) = name[3..].parse::<usize>().ok() else {
            continue;
        };
        let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
        if v.len() < 5 {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user already).
        let total: u64 = v.iter().take(8).sum();
        let idle = v[3] + v[4];
        if out.len() <= idx {
            out.resize(idx + 1, CpuTimes::default());
        }
        out[idx] = CpuTimes {
            busy: total - idle.min(total),
            task: v[0] + v[1] + v[2],
            total,
        };
    }
    out
}

/// Per-CPU (busy %, task %) between two `cpu_times` readings.
pub fn cpu_pct(before: &[CpuTimes], after: &[CpuTimes]) -> Vec<(f64, f64)> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.total.saturating_sub(b.total);
            let pct = |x: u64| {
                if total == 0 {
                    0.0
                } else {
                    (x as f64 * 1000.0 / total as f64).round() / 10.0
                }
            };
            (
                pct(a.busy.saturating_sub(b.busy)),
                pct(a.task.saturating_sub(b.task)),
            )
        })
        .collect()
}

/// The system-wide UDP counters of /proc/net/snmp that tell loss in the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpSnmp {
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
    pub no_ports: u64,
}

impl UdpSnmp {
    pub fn read() -> UdpSnmp {
        let Ok(s) = fs::read_to_string("/proc/net/snmp") else {
            return UdpSnmp::default();
        };
        let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return UdpSnmp::default();
        };
        let mut u = UdpSnmp::default();
        for (n, v) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            let v = v.parse().unwrap_or(0);
            match n {
                "InErrors" => u.in_errors = v,
                "RcvbufErrors" => u.rcvbuf_errors = v,
                "SndbufErrors" => u.sndbuf_errors = v,
                "NoPorts" => u.no_ports = v,
                _ => {}
            }
        }
        u
    }

    pub fn since(self, before: UdpSnmp) -> UdpSnmp {
        UdpSnmp {
            in_errors: self.in_errors.saturating_sub(before.in_errors),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
            no_ports: self.no_ports.saturating_sub(before.no_ports),
        }
    }
}

/// Datagrams dropped so far by the UDP sockets (IPv4, /proc/net/udp) whose local port is in
/// `ours`, and by all the others: (ours, others).
pub fn udp_socket_drops(ours: &HashSet<u16>) -> (u64, u64) {
    let Ok(s) = fs::read_to_string("/proc/net/udp") else {
        return (0, 0);
    };
    let (mut mine, mut others) = (0u64, 0u64);
    for line in s.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        let (Some(local), Some(drops)) = (f.get(1), f.last()) else {
            continue;
        };
        let Some(port) = local
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        let d: u64 = drops.parse().unwrap_or(0);
        if ours.contains(&port) {
            mine += d;
        } else {
            others += d;
        }
    }
    (mine, others)
}

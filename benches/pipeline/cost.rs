//! What a process costs: CPU seconds and memory, read from /proc.

use std::process::Command;

/// CPU seconds (user + system) and peak/current RSS of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStat {
    pub cpu_secs: f64,
    pub rss_kb: u64,
    pub peak_rss_kb: u64,
}

pub fn proc_stat(pid: u32) -> ProcStat {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    ProcStat {
        cpu_secs: (ticks(11) + ticks(12)) / clock_ticks(),
        rss_kb: kb("VmRSS:"),
        peak_rss_kb: kb("VmHWM:"),
    }
}

/// CPU seconds spent over `events` events, per million events.
pub fn per_million(cpu_secs: f64, events: f64) -> f64 {
    cpu_secs / events * 1e6
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

//! Reading one sample's memory figures, and the clock samples are stamped with.
//!
//! - process RSS from sysinfo, refreshing our own pid only (never the whole process table each
//!   second);
//! - jemalloc `stats.allocated` / `stats.resident` after advancing the `epoch` (feature
//!   `jemalloc`; 0 without it, or when jemalloc is not the global allocator);
//! - RSS of child processes (the desktop's WebKit processes), at most every
//!   [`CHILDREN_EVERY`] and cached in between, only when asked for.

use std::time::Duration;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::time::Instant;

use crate::events::{MemoryFigures, now_ms};

/// Children are rescanned at most this often: on Linux a scan reads `/proc/*/stat` for every
/// process on the machine, which is too much work for every second.
pub(crate) const CHILDREN_EVERY: Duration = Duration::from_secs(5);

/// How deep below our process children are counted: WebKitGTK's web and network processes
/// are children, or grandchildren when sandboxed behind `bwrap`; one more level for slack.
const CHILD_DEPTH: usize = 3;

/// A wall clock ahead of the sample clock by more than this (suspend/resume, an NTP step) moves
/// the sample clock forward to it.
const RESYNC_MS: u64 = 2_000;

/// Epoch milliseconds that never go backwards and advance with tokio's clock (so paused-time
/// tests see seconds pass). A wall clock that runs ahead (the machine slept, NTP stepped
/// forward) pulls the clock forward; a wall clock set back is not followed, so samples stay in
/// order for `samples_since` and slopes.
#[derive(Debug)]
pub(crate) struct Clock {
    anchor_ms: u64,
    anchor: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            anchor_ms: now_ms(),
            anchor: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&mut self) -> u64 {
        self.at(now_ms())
    }

    /// The clock's reading given the wall clock's (split out so tests can move the wall).
    fn at(&mut self, wall_ms: u64) -> u64 {
        let mono = self.anchor_ms + self.anchor.elapsed().as_millis() as u64;
        if wall_ms > mono + RESYNC_MS {
            self.anchor_ms = wall_ms;
            self.anchor = Instant::now();
            return wall_ms;
        }
        mono
    }
}

/// Reads memory figures; owned by the monitor's task (and used once by `Monitor::start`).
pub(crate) struct Sampler {
    /// Holds our own process only: every refresh names our pid.
    system: System,
    pid: Pid,
    /// `None` unless children are counted.
    children: Option<Children>,
    #[cfg(feature = "jemalloc")]
    allocator: Option<Allocator>,
}

impl Sampler {
    pub(crate) fn new(include_children: bool) -> Self {
        Self {
            system: System::new(),
            pid: Pid::from_u32(std::process::id()),
            children: include_children.then(Children::new),
            #[cfg(feature = "jemalloc")]
            allocator: Allocator::new(),
        }
    }

    pub(crate) fn memory(&mut self) -> MemoryFigures {
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().without_tasks(),
        );
        let rss_bytes = self.system.process(self.pid).map_or(0, |p| p.memory());
        let (allocated_bytes, resident_bytes) = self.allocator();
        let pid = self.pid.as_u32();
        let children_rss_bytes = self.children.as_mut().map_or(0, |c| c.rss_bytes(pid));
        MemoryFigures {
            rss_bytes,
            allocated_bytes,
            resident_bytes,
            children_rss_bytes,
        }
    }

    #[cfg(feature = "jemalloc")]
    fn allocator(&self) -> (u64, u64) {
        self.allocator.map_or((0, 0), Allocator::read)
    }

    #[cfg(not(feature = "jemalloc"))]
    fn allocator(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// jemalloc's statistics, looked up once by MIB (no string lookups each second).
#[cfg(feature = "jemalloc")]
#[derive(Clone, Copy)]
struct Allocator {
    epoch: tikv_jemalloc_ctl::epoch_mib,
    allocated: tikv_jemalloc_ctl::stats::allocated_mib,
    resident: tikv_jemalloc_ctl::stats::resident_mib,
}

#[cfg(feature = "jemalloc")]
impl Allocator {
    fn new() -> Option<Self> {
        Some(Self {
            epoch: tikv_jemalloc_ctl::epoch::mib().ok()?,
            allocated: tikv_jemalloc_ctl::stats::allocated::mib().ok()?,
            resident: tikv_jemalloc_ctl::stats::resident::mib().ok()?,
        })
    }

    /// `(allocated, resident)` bytes. The statistics are cached by jemalloc until the epoch
    /// advances, so it is advanced first.
    fn read(self) -> (u64, u64) {
        if self.epoch.advance().is_err() {
            return (0, 0);
        }
        (
            self.allocated.read().map_or(0, |b| b as u64),
            self.resident.read().map_or(0, |b| b as u64),
        )
    }
}

/// Cached children RSS.
struct Children {
    bytes: u64,
    read_at: Option<Instant>,
    /// Elsewhere than Linux the process table comes from sysinfo; it keeps live processes
    /// only (dead ones are removed on each refresh).
    #[cfg(not(target_os = "linux"))]
    system: System,
}

impl Children {
    fn new() -> Self {
        Self {
            bytes: 0,
            read_at: None,
            #[cfg(not(target_os = "linux"))]
            system: System::new(),
        }
    }

    fn rss_bytes(&mut self, root: u32) -> u64 {
        if self.read_at.is_none_or(|at| at.elapsed() >= CHILDREN_EVERY) {
            self.read_at = Some(Instant::now());
            #[cfg(target_os = "linux")]
            {
                self.bytes = linux::children_rss_bytes(root);
            }
            #[cfg(not(target_os = "linux"))]
            {
                self.bytes = sysinfo_children_rss_bytes(&mut self.system, root);
            }
        }
        self.bytes
    }
}

/// Processes below `root`, down to `depth` levels, from `(pid, parent pid)` pairs.
fn descendants(pairs: &[(u32, u32)], root: u32, depth: usize) -> Vec<u32> {
    let mut found = Vec::new();
    let mut level = vec![root];
    for _ in 0..depth {
        let next: Vec<u32> = pairs
            .iter()
            .filter(|(pid, ppid)| level.contains(ppid) && *pid != root)
            .map(|&(pid, _)| pid)
            .collect();
        if next.is_empty() {
            break;
        }
        found.extend_from_slice(&next);
        level = next;
    }
    found
}

#[cfg(not(target_os = "linux"))]
fn sysinfo_children_rss_bytes(system: &mut System, root: u32) -> u64 {
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing().with_memory().without_tasks(),
    );
    let pairs: Vec<(u32, u32)> = system
        .processes()
        .iter()
        .filter_map(|(pid, p)| Some((pid.as_u32(), p.parent()?.as_u32())))
        .collect();
    descendants(&pairs, root, CHILD_DEPTH)
        .into_iter()
        .filter_map(|pid| system.process(Pid::from_u32(pid)))
        .map(|p| p.memory())
        .sum()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::Read;
    use std::path::Path;

    use super::{CHILD_DEPTH, descendants};

    /// Sum of `VmRSS` of the processes below `root`, found through `/proc/*/stat`.
    pub(super) fn children_rss_bytes(root: u32) -> u64 {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        // One buffer for every file read in this scan.
        let mut buf = String::with_capacity(1024);
        let mut pairs = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if read(&entry.path().join("stat"), &mut buf)
                && let Some(ppid) = parse_ppid(&buf)
            {
                pairs.push((pid, ppid));
            }
        }
        let mut total = 0;
        for pid in descendants(&pairs, root, CHILD_DEPTH) {
            let status = Path::new("/proc").join(pid.to_string()).join("status");
            if read(&status, &mut buf) {
                total += parse_vm_rss_bytes(&buf).unwrap_or(0);
            }
        }
        total
    }

    /// Reads a whole file into `buf`; false when it is gone (the process exited) or unreadable.
    fn read(path: &Path, buf: &mut String) -> bool {
        buf.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(buf))
            .is_ok()
    }

    /// The parent pid from `/proc/PID/stat`: `pid (comm) state ppid ...`, where `comm` may hold
    /// spaces and parentheses, so fields are counted from the last `)`.
    pub(super) fn parse_ppid(stat: &str) -> Option<u32> {
        let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_ascii_whitespace();
        fields.next()?; // state
        fields.next()?.parse().ok()
    }

    /// `VmRSS` from `/proc/PID/status`, in bytes (the kernel writes kB). Kernel threads have none.
    pub(super) fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_go_down_the_tree_to_the_depth() {
        // 1 ─ 10 (us) ─ 11 ─ 12 ─ 13 ─ 14 ; 10 ─ 15 ; 1 ─ 20 (not ours)
        let pairs = [
            (10, 1),
            (11, 10),
            (12, 11),
            (13, 12),
            (14, 13),
            (15, 10),
            (20, 1),
        ];
        let mut d = descendants(&pairs, 10, CHILD_DEPTH);
        d.sort_unstable();
        assert_eq!(d, vec![11, 12, 13, 15]);
        assert_eq!(descendants(&pairs, 10, 1), vec![11, 15]);
        assert!(descendants(&pairs, 99, CHILD_DEPTH).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn proc_files_parse() {
        let stat = "4242 (Web Content (x)) S 4100 4242 4100 0 -1 4194560 1000 0 0 0";
        assert_eq!(linux::parse_ppid(stat), Some(4100));
        assert_eq!(linux::parse_ppid("garbage"), None);
        let status =
            "Name:\tWebKitWebProces\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t20\n";
        assert_eq!(linux::parse_vm_rss_bytes(status), Some(123_456 * 1024));
        assert_eq!(linux::parse_vm_rss_bytes("Name:\tkthreadd\n"), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_child_process_is_counted() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let mut sampler = Sampler::new(true);
        let with_children = sampler.memory();
        let without = Sampler::new(false).memory();
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        assert!(with_children.children_rss_bytes > 0, "{with_children:?}");
        assert_eq!(without.children_rss_bytes, 0);
    }

    #[test]
    fn own_rss_is_read() {
        let m = Sampler::new(false).memory();
        // A test binary with a tokio runtime and libtest is well over a megabyte resident.
        assert!(m.rss_bytes > 1 << 20, "{m:?}");
    }

    #[cfg(feature = "jemalloc")]
    #[test]
    fn jemalloc_stats_are_readable() {
        let a = Allocator::new().expect("jemalloc MIBs resolve");
        let (allocated, resident) = a.read();
        // Resident covers everything allocated (and jemalloc's own metadata).
        assert!(
            resident >= allocated && resident > 0,
            "{allocated} {resident}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn children_are_rescanned_at_most_every_five_seconds() {
        let mut c = Children::new();
        let pid = std::process::id();
        c.rss_bytes(pid);
        let first = c.read_at.unwrap();
        tokio::time::advance(Duration::from_millis(4_999)).await;
        c.rss_bytes(pid);
        assert_eq!(c.read_at, Some(first), "cached within five seconds");
        tokio::time::advance(Duration::from_millis(1)).await;
        c.rss_bytes(pid);
        assert_eq!(c.read_at, Some(first + CHILDREN_EVERY));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time_and_jumps_forward_only() {
        let mut clock = Clock::new();
        let wall = now_ms();
        let t0 = clock.at(wall);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(
            clock.at(wall) - t0,
            3_600_000,
            "paused time moves the clock"
        );
        // The machine slept for a day: the wall clock is far ahead; follow it.
        let woke = t0 + 3_600_000 + 86_400_000;
        assert_eq!(clock.at(woke), woke);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clock.at(woke + 1000), woke + 1000);
        // The wall clock is set back an hour: the clock keeps going forward.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clock.at(woke - 3_600_000), woke + 2000);
    }
}

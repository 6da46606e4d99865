//! Process metrics under the conventional `process_*` names, read from `/proc/self` at scrape
//! time. A value that cannot be read is left out rather than failing the scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What one look at `/proc/self` found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, PartialEq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime_ticks: n(14)?,
        stime_ticks: n(15)?,
        threads: n(20)?,
        start_ticks: n(22)?,
        vsize: n(23)?,
        rss_pages: n(24)?,
    })
}

/// Boot time (seconds since the epoch) from the `btime` line of `/proc/stat`.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass, which lives on our stack.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}

impl ProcessSample {
    pub fn read() -> ProcessSample {
        let mut out = ProcessSample {
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: max_fds(),
            ..ProcessSample::default()
        };
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t));
        let (Some(stat), Some(ticks)) = (stat, sysconf(libc::_SC_CLK_TCK)) else {
            return out;
        };
        let ticks = ticks as f64;
        out.cpu_seconds = Some((stat.utime_ticks + stat.stime_ticks) as f64 / ticks);
        out.threads = Some(stat.threads);
        out.virtual_bytes = Some(stat.vsize);
        out.resident_bytes =
            sysconf(libc::_SC_PAGESIZE).map(|page| stat.rss_pages.saturating_mul(page));
        out.start_time_seconds = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_btime(&t))
            .map(|boot| boot as f64 + stat.start_ticks as f64 / ticks);
        out
    }
}

#[derive(Debug)]
pub struct ProcessCollector;

fn gauge<V>(enc: &mut DescriptorEncoder, name: &str, help: &str, v: Option<V>) -> std::fmt::Result
where
    V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Send + Sync + 'static,
{
    let Some(v) = v else { return Ok(()) };
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessSample::read();
        if let Some(cpu) = s.cpu_seconds {
            let m = enc.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(m)?;
        }
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            s.resident_bytes.map(|v| v as i64),
        )?;
        gauge(
            &mut enc,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            s.virtual_bytes.map(|v| v as i64),
        )?;
        gauge(
            &mut enc,
            "process_open_fds",
            "Open file descriptors.",
            s.open_fds.map(|v| v as i64),
        )?;
        gauge(
            &mut enc,
            "process_max_fds",
            "Limit on open file descriptors (RLIMIT_NOFILE).",
            s.max_fds.map(|v| v as i64),
        )?;
        gauge(
            &mut enc,
            "process_threads",
            "OS threads in the process.",
            s.threads.map(|v| v as i64),
        )?;
        gauge(
            &mut enc,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            s.start_time_seconds,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime_ticks: 250,
                stime_ticks: 50,
                threads: 7,
                start_ticks: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn btime_is_found() {
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn this_process_reads_plausibly() {
        let s = ProcessSample::read();
        assert!(s.resident_bytes.unwrap() > 1024 * 1024, "{s:?}");
        assert!(s.open_fds.unwrap() >= 3, "{s:?}");
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap(), "{s:?}");
        assert!(s.threads.unwrap() >= 1, "{s:?}");
        assert!(s.cpu_seconds.unwrap() >= 0.0, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86400.0,
            "{start} vs {now}"
        );
    }
}

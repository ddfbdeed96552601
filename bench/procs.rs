//! Processes the bench starts and measures: hookrelay and the null pipeline as
//! children (stopped on drop, also when the driver fails), the broker found by
//! its port, and CPU/RSS read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// CPU and memory of one process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// VmHWM (peak resident set), MiB.
    pub peak_rss_mib: f64,
    /// VmRSS now, MiB.
    pub rss_mib: f64,
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads /proc/<pid>/stat and status ("self" for this process); None once the process is gone.
pub fn stats(pid: &str) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    };
    Some(ProcStats {
        cpu_s: ticks / clock_ticks(),
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        rss_mib: kib("VmRSS:") / 1024.0,
    })
}

/// The broker's pid: the process listening on the bootstrap port, else the first `kafka.Kafka` java process.
pub fn broker_pid(bootstrap: &str) -> Option<String> {
    let port = bootstrap.split(',').next()?.rsplit(':').next()?;
    let ss = Command::new("ss").args(["-ltnpH", &format!("sport = :{port}")]).output().ok();
    let from_ss = ss.and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let at = text.find("pid=")? + 4;
        Some(text[at..].chars().take_while(char::is_ascii_digit).collect::<String>())
    });
    from_ss.filter(|p| !p.is_empty()).or_else(|| {
        let o = Command::new("pgrep").args(["-f", "kafka.Kafka"]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string)
    })
}

/// A child process that is stopped (SIGTERM, then SIGKILL after `grace`) when dropped.
pub struct Managed {
    pub name: &'static str,
    pub child: Child,
    grace: Duration,
}

impl Managed {
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn stats(&self) -> Option<ProcStats> {
        stats(&self.pid())
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait up to the grace, then SIGKILL. Returns true if it exited by itself.
    pub fn stop(&mut self) -> bool {
        if self.exited() {
            return true;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid()]).status();
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the release binaries are: next to this example (target/release/examples/bench).
pub fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("target/release").to_path_buf()
}

/// Builds hookrelay and the null pipeline in release mode (quick when up to date).
pub fn build() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "hookrelay", "--example", "null_pipeline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?;
    anyhow::ensure!(status.success(), "cargo build --release failed");
    Ok(())
}

/// Starts `hookrelay run` with `config` (an admin listener is added); its log goes to `log`.
pub fn spawn_relay(
    config: &str,
    dir: &Path,
    log: &Path,
    ca_file: Option<&Path>,
) -> anyhow::Result<(Managed, SocketAddr)> {
    let admin: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let path = dir.join("hookrelay.toml");
    std::fs::write(&path, format!("{config}\n[admin]\nlisten = \"{admin}\"\n"))?;
    let mut command = Command::new(release_dir().join("hookrelay"));
    command.arg("--config").arg(&path).arg("run").stdout(Stdio::null()).stderr(std::fs::File::create(log)?);
    if let Some(ca) = ca_file {
        // reqwest's native-tls (OpenSSL) trusts the file named here instead of the system store.
        command.env("SSL_CERT_FILE", ca);
    }
    let child = command.spawn()?;
    Ok((Managed { name: "hookrelay", child, grace: Duration::from_secs(30) }, admin))
}

/// Starts the null pipeline on `topic` with its own `group`; it stops by itself after `max`.
/// With `ca_file` it trusts that CA, as the relay does (the TLS baseline of S6).
pub fn spawn_null(
    bootstrap: &str,
    topic: &str,
    group: &str,
    max: Duration,
    log: &Path,
    ca_file: Option<&Path>,
) -> anyhow::Result<Managed> {
    let mut command = Command::new(release_dir().join("examples/null_pipeline"));
    command
        .args(["--brokers", bootstrap, "--topic", topic, "--group", group, "--in-flight", "512"])
        .args(["--max-secs", &max.as_secs().to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
    if let Some(ca) = ca_file {
        command.env("SSL_CERT_FILE", ca);
    }
    Ok(Managed { name: "null_pipeline", child: command.spawn()?, grace: Duration::from_secs(10) })
}

/// Attaches `perf record` with DWARF call graphs to a running process; it
/// writes `out` when stopped (SIGTERM, as [`Managed::stop`] sends).
pub fn spawn_perf(pid: &str, out: &Path) -> anyhow::Result<Managed> {
    let child = Command::new("perf")
        .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p", pid, "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Managed { name: "perf", child, grace: Duration::from_secs(120) })
}

/// The sum of every series of a counter on the relay's /metrics (None when unreadable).
pub async fn metric_sum(admin: SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.ok()?.text().await.ok()?;
    Some(sum_series(&text, name))
}

/// Sums the samples of `name` (with or without labels) in a Prometheus text exposition.
pub fn sum_series(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the relay's /ready answers 200.
pub async fn wait_ready(relay: &mut Managed, admin: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let url = format!("http://{admin}/ready");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        anyhow::ensure!(!relay.exited(), "hookrelay exited before it was ready");
        anyhow::ensure!(Instant::now() < deadline, "hookrelay not ready in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes a throwaway CA and a certificate for 127.0.0.1 signed by it (openssl CLI);
/// returns the CA file and the server identity.
pub fn make_tls(dir: &Path) -> anyhow::Result<(PathBuf, native_tls::Identity)> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output()?;
        anyhow::ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509", "-new"],
        &ec[..],
        &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=hookrelay bench CA"],
    ]
    .concat())?;
    run(&[&["req", "-new"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]]
        .concat())?;
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n")?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
    ])?;
    let identity = native_tls::Identity::from_pkcs8(
        &std::fs::read(dir.join("server.crt"))?,
        &std::fs::read(dir.join("server.key"))?,
    )?;
    Ok((dir.join("ca.crt"), identity))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_every_series_of_one_counter_only() {
        let text = "# HELP hookrelay_retries_routed_total Records routed.\n\
                    hookrelay_retries_routed_total{tier=\"a\"} 3\n\
                    hookrelay_retries_routed_total{tier=\"b\"} 4\n\
                    hookrelay_retries_routed_total_other 100\n\
                    hookrelay_dead_letters_total{reason=\"x\"} 9\n";
        assert_eq!(super::sum_series(text, "hookrelay_retries_routed_total"), 7.0);
        assert_eq!(super::sum_series(text, "hookrelay_endpoint_overflow_total"), 0.0);
    }
}

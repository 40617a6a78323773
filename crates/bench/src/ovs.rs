//! A private Open vSwitch for the benchmarks' peer columns: ovsdb-server and
//! ovs-vswitchd (userspace, dummy datapath, no kernel module) in a temporary
//! run directory of their own, a bridge loaded with a workload's flows and
//! groups, and its OpenFlow management socket for an OpenFlow client.
//!
//! Invariant: the daemons a [`PrivateOvs`] started are stopped (by the
//! child handles it holds, whatever happened in between) and its run
//! directory removed when it is dropped; it never touches a system Open
//! vSwitch (every tool it runs is pointed at its own directory and socket).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the database schema.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A running private Open vSwitch.
pub struct PrivateOvs {
    dir: PathBuf,
    children: Vec<Child>,
}

/// The installed Open vSwitch's version line (`ovs-vswitchd (Open vSwitch) 3.1.0`).
pub fn version() -> Option<String> {
    let out = Command::new("ovs-vswitchd").arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next().map(|l| l.trim().to_string())
}

/// Is Open vSwitch (the daemons and the tools) installed here?
pub fn available() -> bool {
    let runs = |p: &str| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    ["ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovsdb-tool"].iter().all(|p| runs(p))
        && Path::new(SCHEMA).exists()
}

fn wait_for(path: &Path, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(format!("{what}: {} did not appear in 10 s", path.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl PrivateOvs {
    /// Starts the daemons in a fresh directory under the system's temporary one.
    pub fn start() -> Result<PrivateOvs, String> {
        let dir = std::env::temp_dir().join(format!("kairo-ovs-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut ovs = PrivateOvs { dir, children: Vec::new() };
        let db = ovs.dir.join("conf.db");
        ovs.run("ovsdb-tool", &["create", &db.to_string_lossy(), SCHEMA])?;
        let sock = ovs.dir.join("db.sock");
        let child = ovs
            .command("ovsdb-server")
            .args(["--no-chdir", "-vconsole:off"])
            .arg(format!("--unixctl={}", ovs.dir.join("ovsdb-server.ctl").display()))
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--log-file={}", ovs.dir.join("ovsdb-server.log").display()))
            .arg(&db)
            .spawn()
            .map_err(|e| format!("ovsdb-server: {e}"))?;
        ovs.children.push(child);
        wait_for(&sock, "ovsdb-server")?;
        ovs.vsctl(&["--no-wait", "init"])?;
        let child = ovs
            .command("ovs-vswitchd")
            .args(["--enable-dummy", "--disable-system", "--disable-system-route", "--no-chdir", "-vconsole:off"])
            .arg(format!("--unixctl={}", ovs.dir.join("ovs-vswitchd.ctl").display()))
            .arg(format!("--log-file={}", ovs.dir.join("ovs-vswitchd.log").display()))
            .arg(format!("unix:{}", sock.display()))
            .spawn()
            .map_err(|e| format!("ovs-vswitchd: {e}"))?;
        ovs.children.push(child);
        wait_for(&ovs.dir.join("ovs-vswitchd.ctl"), "ovs-vswitchd")?;
        // Megaflows stay until the run ends (Open vSwitch's default max-idle
        // of 10 s would expire the first packets' before a large fill is
        // done, and its cache would look smaller than it is), as kairo's
        // caches in the same run.
        ovs.vsctl(&["--no-wait", "set", "Open_vSwitch", ".", "other_config:max-idle=3600000"])?;
        Ok(ovs)
    }

    /// A command for one of Open vSwitch's programs, pointed at this
    /// instance. It dies with the bench: killed if the thread that started
    /// it ends, whatever ends it (a bench killed by a signal never unwinds
    /// to [`Drop`], and its daemons would run on).
    fn command(&self, prog: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(prog);
        for v in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            c.env(v, &self.dir);
        }
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let parent = rustix::process::getpid();
        // SAFETY: the closure runs in the forked child before exec, where
        // only async-signal-safe work is allowed: it makes two system calls
        // (prctl(PR_SET_PDEATHSIG) and getppid) through rustix, which
        // neither allocate nor take locks, and builds an io::Error from a
        // raw errno (no allocation) when the parent is already gone.
        unsafe {
            c.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
                // The parent may have died before the signal was set.
                if rustix::process::getppid() != Some(parent) {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        c
    }

    /// Runs a tool to completion; its output, or an error with its stderr.
    pub fn run(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let out = self
            .command(prog)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{prog}: {e}"))?;
        if !out.status.success() {
            return Err(format!("{prog} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        let db = format!("--db=unix:{}", self.dir.join("db.sock").display());
        let mut all = vec![db.as_str(), "--timeout=30"];
        all.extend_from_slice(args);
        self.run("ovs-vsctl", &all)
    }

    /// Adds bridge `name` (dummy datapath, fail-mode secure, OpenFlow 1.0 to
    /// 1.5, dummy ports `p1`..`pN` as OpenFlow ports 1..N) with its flows and
    /// groups (OpenFlow 1.3 syntax, as the workload writes them), and
    /// returns its OpenFlow management socket.
    pub fn bridge(&self, name: &str, flows: &str, groups: &str, n_ports: u32) -> Result<PathBuf, String> {
        let ports: Vec<String> = (1..=n_ports).map(|i| format!("p{i}")).collect();
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        self.add_bridge(name, "dummy", &ports, Some("dummy"), flows, groups)
    }

    /// Adds bridge `name` on datapath `datapath` (fail-mode secure, OpenFlow
    /// 1.0 to 1.5) with interfaces `ports` as OpenFlow ports 1..N (of
    /// `port_type` if given), loads its groups and flows, and returns its
    /// management socket.
    fn add_bridge(
        &self,
        name: &str,
        datapath: &str,
        ports: &[&str],
        port_type: Option<&str>,
        flows: &str,
        groups: &str,
    ) -> Result<PathBuf, String> {
        let mut args: Vec<String> = [
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            &format!("datapath_type={datapath}"),
            "fail-mode=secure",
            "protocols=OpenFlow10,OpenFlow11,OpenFlow12,OpenFlow13,OpenFlow14,OpenFlow15",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (i, dev) in ports.iter().enumerate() {
            for a in ["--", "add-port", name, dev, "--", "set", "interface", dev] {
                args.push(a.to_string());
            }
            if let Some(t) = port_type {
                args.push(format!("type={t}"));
            }
            args.push(format!("ofport_request={}", i + 1));
        }
        self.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mgmt = self.dir.join(format!("{name}.mgmt"));
        wait_for(&mgmt, "the bridge's management socket")?;
        let target = format!("unix:{}", mgmt.display());
        for (what, text, cmd) in [("groups", groups, "add-groups"), ("flows", flows, "add-flows")] {
            if text.trim().is_empty() {
                continue;
            }
            let file = self.dir.join(format!("{name}.{what}"));
            std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
            self.run("ovs-ofctl", &["-O", "OpenFlow13", cmd, &target, &file.to_string_lossy()])?;
        }
        Ok(mgmt)
    }
}

impl PrivateOvs {
    /// Adds bridge `name` on the userspace datapath (`datapath_type=netdev`)
    /// with the network interfaces `ifaces` as OpenFlow ports 1..N (read and
    /// written by Open vSwitch through AF_PACKET sockets) and `flows`; waits
    /// until the datapath has every port.
    pub fn bridge_on(&self, name: &str, ifaces: &[&str], flows: &str) -> Result<(), String> {
        self.bridge_on_as(name, ifaces, None, flows)
    }

    /// As [`PrivateOvs::bridge_on`], the interfaces of `port_type` (e.g.
    /// `afxdp`; None: `system`, AF_PACKET sockets).
    pub fn bridge_on_as(
        &self,
        name: &str,
        ifaces: &[&str],
        port_type: Option<&str>,
        flows: &str,
    ) -> Result<(), String> {
        self.add_bridge(name, "netdev", ifaces, port_type, flows, "")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let show = self.appctl(&["dpctl/show"]).unwrap_or_default();
            if ifaces.iter().all(|d| show.contains(&format!(": {d}"))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Open vSwitch did not add {ifaces:?} to its datapath in 10 s{}",
                    self.last_complaint()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The connections its userspace connection tracker holds
    /// (`dpctl/ct-stats-show`'s total).
    pub fn conntrack_total(&self) -> u64 {
        let text = self.appctl(&["dpctl/ct-stats-show"]).unwrap_or_default();
        text.lines().find_map(|l| l.trim().strip_prefix("Total:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// Runs an `ovs-appctl` command on this instance's ovs-vswitchd, over
    /// its control socket (as `ovs-appctl` does, without a process per
    /// call): the command's output, or its error.
    pub fn appctl(&self, args: &[&str]) -> Result<String, String> {
        let (method, params) = args.split_first().ok_or("appctl: no command")?;
        let mut conn = self.unixctl_send(method, params)?;
        conn.reply(Duration::from_secs(60))
    }

    /// Sends one command to ovs-vswitchd's control socket; the reply is
    /// read from the [`Unixctl`] returned.
    fn unixctl_send(&self, method: &str, params: &[&str]) -> Result<Unixctl, String> {
        use std::io::Write;
        let path = self.dir.join("ovs-vswitchd.ctl");
        let mut stream = std::os::unix::net::UnixStream::connect(&path)
            .map_err(|e| format!("ovs-vswitchd's control socket {}: {e}", path.display()))?;
        let request = serde_json::json!({ "id": 0, "method": method, "params": params });
        stream.write_all(request.to_string().as_bytes()).map_err(|e| format!("ovs-appctl {method}: {e}"))?;
        Ok(Unixctl { stream, method: method.to_string() })
    }

    /// Asks ovs-vswitchd to answer once the revalidation round after this
    /// request ends (`revalidator/wait`); [`Unixctl::reply`] waits for it.
    /// With periodic rounds off ([`PrivateOvs::hold_revalidation`]) the
    /// round that answers is the one the next change to the tables starts.
    pub fn after_next_round(&self) -> Result<Unixctl, String> {
        self.unixctl_send("revalidator/wait", &[])
    }

    /// Stops periodic revalidation rounds (rounds then run only when the
    /// tables change), so that a round's end can be told apart; raises the
    /// datapath flow limit to `limit` megaflows (Open vSwitch grows it 1,000
    /// a round from 10,000 otherwise).
    pub fn hold_revalidation(&self, limit: usize) -> Result<(), String> {
        self.vsctl(&["--no-wait", "set", "Open_vSwitch", ".", "other_config:max-revalidator=3600000"])?;
        self.vsctl(&["--no-wait", "set", "Open_vSwitch", ".", &format!("other_config:flow-limit={limit}")])?;
        self.appctl(&["upcall/set-flow-limit", &limit.to_string()]).map(|_| ())
    }

    /// Turns the exact-match cache off (`emc-insert-inv-prob=0`: nothing is
    /// inserted), so that every hit is a megaflow's.
    pub fn emc_off(&self) -> Result<(), String> {
        self.vsctl(&["set", "Open_vSwitch", ".", "other_config:emc-insert-inv-prob=0"]).map(|_| ())
    }

    /// Its datapath's lookups so far (`dpctl/show`): hits (EMC and
    /// megaflows), misses (upcalls) and upcalls lost.
    pub fn lookups(&self) -> Result<(u64, u64, u64), String> {
        let text = self.appctl(&["dpctl/show"])?;
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("lookups:"))
            .ok_or_else(|| format!("dpctl/show gave no lookups line:\n{text}"))?;
        let field = |name: &str| -> Result<u64, String> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("dpctl/show: no `{name}` in `{line}`"))
        };
        Ok((field("hit:")?, field("missed:")?, field("lost:")?))
    }

    /// Gives the frames (port name, hex) to its datapath in their order, but
    /// within windows of `window` frames, taken port by port (one
    /// `netdev-dummy/receive` per port and window rather than per frame): a
    /// window is taken whole before the next is sent.
    pub fn receive_in_order(
        &self,
        frames: &[(String, String)],
        window: usize,
        pause: std::time::Duration,
        sent: &dyn Fn(usize),
    ) -> Result<(), String> {
        for (i, w) in frames.chunks(window.max(1)).enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            let mut by_port: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for (port, hex) in w {
                by_port.entry(port.clone()).or_default().push(hex.clone());
            }
            self.receive(&by_port, sent)?;
        }
        Ok(())
    }

    /// How long its last revalidation round took, as it reports it
    /// (`upcall/show`'s dump duration, in milliseconds).
    pub fn last_round_ms(&self) -> Option<f64> {
        let t = self.appctl(&["upcall/show"]).ok()?;
        t.split("dump duration :").nth(1)?.trim().split("ms").next()?.trim().parse().ok()
    }

    /// ovs-vswitchd's resident memory now and at its peak (MiB), from
    /// `/proc` (Linux; `None` elsewhere).
    pub fn vswitchd_memory_mib(&self) -> Option<(f64, f64)> {
        let pid = self.children.get(1)?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<f64> {
            status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
        };
        Some((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
    }

    /// Makes the dummy ports `names` write what they send to a pcap file
    /// each (netdev-dummy's `tx_pcap`), read by [`PrivateOvs::sent_since`].
    pub fn capture_tx(&self, names: &[&str]) -> Result<(), String> {
        for name in names {
            let file = self.dir.join(format!("{name}.tx.pcap"));
            self.vsctl(&["set", "interface", name, &format!("options:tx_pcap={}", file.display())])?;
        }
        Ok(())
    }

    /// The frames port `name` has sent since byte `from` of its capture
    /// ([`PrivateOvs::capture_tx`]; 0: from the start), and where the next
    /// read starts. Only whole records are taken (a record being written
    /// is left for the next read).
    pub fn sent_since(&self, name: &str, from: u64) -> (Vec<Vec<u8>>, u64) {
        use std::io::{Read, Seek, SeekFrom};
        // The file header (for its byte order), then what follows `from`.
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(self.dir.join(format!("{name}.tx.pcap")))?;
            let mut bytes = vec![0; PCAP_HEADER];
            f.read_exact(&mut bytes)?;
            f.seek(SeekFrom::Start(from.max(PCAP_HEADER as u64)))?;
            f.read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        let Ok(bytes) = read() else { return (Vec::new(), from) };
        let (frames, end) = pcap_records(&bytes, 0);
        (frames, from.max(PCAP_HEADER as u64) + end - PCAP_HEADER as u64)
    }

    /// Gives each dummy port its frames (hex, as `netdev-dummy/receive`
    /// takes them) in bursts it queues whole, and returns once its datapath
    /// has taken every one; `sent` hears of each burst. (A dummy port queues
    /// at most 100 frames and drops the rest silently: each burst goes once
    /// the port has taken the one before.)
    pub fn receive(
        &self,
        by_port: &std::collections::BTreeMap<String, Vec<String>>,
        sent: &dyn Fn(usize),
    ) -> Result<(), String> {
        const BURST: usize = 100;
        let base = self.rx_all()?;
        // Per port: frames sent so far, and its receive counter before.
        let mut ports: Vec<(&String, &Vec<String>, usize, u64)> = by_port
            .iter()
            .map(|(name, frames)| {
                let rx = base.get(name.as_str()).copied().ok_or_else(|| format!("dpctl/show -s: no port {name}"))?;
                Ok((name, frames, 0, rx))
            })
            .collect::<Result<_, String>>()?;
        while ports.iter().any(|(_, frames, n, _)| *n < frames.len()) {
            for (name, frames, n, _) in ports.iter_mut() {
                let burst = &frames[*n..(*n + BURST).min(frames.len())];
                if burst.is_empty() {
                    continue;
                }
                let mut args = vec!["netdev-dummy/receive", name.as_str()];
                args.extend(burst.iter().map(String::as_str));
                self.appctl(&args)?;
                *n += burst.len();
                sent(burst.len());
            }
            let t = Instant::now();
            loop {
                let rx = self.rx_all()?;
                let behind = ports
                    .iter()
                    .find(|(name, _, n, base)| rx.get(name.as_str()).copied().unwrap_or(0) < base + *n as u64);
                let Some((name, ..)) = behind else { break };
                if t.elapsed() > Duration::from_secs(30) {
                    return Err(format!("Open vSwitch's port {name} took no frame for 30 s{}", self.last_complaint()));
                }
            }
        }
        Ok(())
    }

    /// Packets its datapath has taken from each port, by name (`dpctl/show -s`).
    pub fn rx_all(&self) -> Result<std::collections::HashMap<String, u64>, String> {
        let text = self.appctl(&["dpctl/show", "-s"])?;
        let mut out = std::collections::HashMap::new();
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            let l = l.trim_start();
            let Some(name) =
                l.strip_prefix("port ").and_then(|r| r.split(": ").nth(1)).and_then(|r| r.split(" (").next())
            else {
                continue;
            };
            let rx = lines.next().and_then(|l| l.trim().strip_prefix("RX packets:"));
            if let Some(n) = rx.and_then(|r| r.split_whitespace().next()?.parse().ok()) {
                out.insert(name.to_string(), n);
            }
        }
        Ok(out)
    }

    /// Where port `name`'s capture ends now, for [`PrivateOvs::sent_since`]
    /// to read what it sends after (taken while nothing is being sent).
    pub fn tx_mark(&self, name: &str) -> u64 {
        std::fs::metadata(self.dir.join(format!("{name}.tx.pcap"))).map_or(0, |m| m.len())
    }

    /// The megaflows its datapath holds now (`dpctl/show`'s flow count:
    /// `upcall/show`'s is refreshed only by revalidation rounds).
    pub fn megaflows(&self) -> usize {
        self.appctl(&["dpctl/show"])
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.trim().strip_prefix("flows:")).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }
}

impl PrivateOvs {
    /// The last emergency or error line of ovs-vswitchd's log, as
    /// "; ovs-vswitchd: LINE" (empty if none): why it stopped answering.
    pub fn last_complaint(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("ovs-vswitchd.log")).unwrap_or_default();
        log.lines()
            .rev()
            .find(|l| l.contains("|EMER|") || l.contains("|ERR|"))
            .map(|l| format!("; ovs-vswitchd: {l}"))
            .unwrap_or_default()
    }
}

/// A pcap file's header, in bytes.
const PCAP_HEADER: usize = 24;

/// The records of a pcap file's bytes from offset `from` (past the file
/// header when 0): their frames, and the offset after the last whole one.
/// Read by hand (a file another process is still writing, read from where
/// the last read ended: a pcap crate's reader starts at the header); the
/// byte order is the magic number's.
fn pcap_records(bytes: &[u8], from: u64) -> (Vec<Vec<u8>>, u64) {
    const RECORD: usize = 16;
    let Some(magic) = bytes.get(..4) else { return (Vec::new(), from) };
    let little = magic == [0xd4, 0xc3, 0xb2, 0xa1] || magic == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) } as usize)
    };
    let mut at = (from as usize).max(PCAP_HEADER);
    let mut out = Vec::new();
    while let Some(len) = u32_at(at + 8) {
        let Some(frame) = bytes.get(at + RECORD..at + RECORD + len) else { break };
        out.push(frame.to_vec());
        at += RECORD + len;
    }
    (out, at as u64)
}

/// A command sent to ovs-vswitchd's control socket, its reply to come.
pub struct Unixctl {
    stream: std::os::unix::net::UnixStream,
    method: String,
}

impl Unixctl {
    /// Waits (up to `limit`) for the reply: the command's output, or its
    /// error (ovs-vswitchd's, or that it did not answer in time).
    pub fn reply(&mut self, limit: Duration) -> Result<String, String> {
        self.reply_within(limit)?
            .ok_or_else(|| format!("ovs-appctl {}: no reply in {} s", self.method, limit.as_secs()))
    }

    /// [`Unixctl::reply`], with `None` when no reply came within `limit`.
    pub fn reply_within(&mut self, limit: Duration) -> Result<Option<String>, String> {
        let m = &self.method;
        self.stream.set_read_timeout(Some(limit)).map_err(|e| format!("ovs-appctl {m}: {e}"))?;
        // (Buffered: serde_json reads a reader a byte at a time.)
        let reader = std::io::BufReader::with_capacity(64 * 1024, &self.stream);
        let mut replies = serde_json::Deserializer::from_reader(reader).into_iter::<serde_json::Value>();
        let v = match replies.next() {
            Some(Ok(v)) => v,
            Some(Err(e))
                if matches!(e.io_error_kind(), Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)) =>
            {
                return Ok(None)
            }
            Some(Err(e)) => return Err(format!("ovs-appctl {m}: a reply that is not JSON-RPC: {e}")),
            None => return Err(format!("ovs-appctl {m}: ovs-vswitchd closed the connection")),
        };
        match (v.get("error"), v.get("result")) {
            (Some(e), _) if !e.is_null() => {
                Err(format!("ovs-appctl {m}: {}", e.as_str().unwrap_or(&e.to_string()).trim()))
            }
            (_, Some(r)) => Ok(Some(r.as_str().unwrap_or_default().to_string())),
            _ => Err(format!("ovs-appctl {m}: a reply with neither result nor error: {v}")),
        }
    }
}

impl Drop for PrivateOvs {
    fn drop(&mut self) {
        // ovs-vswitchd first (it holds the database connection), then ovsdb-server.
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pcap_records_are_read_from_an_offset_and_a_partial_one_is_left() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1];
        f.extend_from_slice(&[0; 20]);
        for (i, len) in [3u32, 5].iter().enumerate() {
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(&len.to_le_bytes());
            f.extend(std::iter::repeat_n(i as u8 + 1, *len as usize));
        }
        let (frames, end) = super::pcap_records(&f, 0);
        assert_eq!(frames, vec![vec![1; 3], vec![2; 5]]);
        assert_eq!(end as usize, f.len());
        let (again, _) = super::pcap_records(&f, 24 + 16 + 3);
        assert_eq!(again, vec![vec![2; 5]]);
        // A record cut short is not taken.
        let (cut, at) = super::pcap_records(&f[..f.len() - 1], 0);
        assert_eq!((cut.len(), at), (1, 24 + 16 + 3));
        assert_eq!(super::pcap_records(&[], 0).0.len(), 0);
    }
}

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

    /// A command for one of Open vSwitch's programs, pointed at this instance.
    fn command(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        for v in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            c.env(v, &self.dir);
        }
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
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
        self.add_bridge(name, "netdev", ifaces, None, flows, "")?;
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

    /// Runs an `ovs-appctl` command on this instance's ovs-vswitchd.
    pub fn appctl(&self, args: &[&str]) -> Result<String, String> {
        let t = self.dir.join("ovs-vswitchd.ctl");
        let t = t.to_string_lossy();
        let mut all = vec!["-t", t.as_ref()];
        all.extend_from_slice(args);
        self.run("ovs-appctl", &all)
    }

    /// Packets its datapath has looked up (hit, missed or lost), from `dpctl/show`.
    pub fn lookups(&self) -> u64 {
        let text = self.appctl(&["dpctl/show"]).unwrap_or_default();
        let num = |key: &str| -> u64 {
            text.split(key).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        num("hit:") + num("missed:") + num("lost:")
    }

    /// Waits (up to `limit`) until the datapath has looked up `n` packets
    /// since it started: `netdev-dummy/receive` only queues them.
    pub fn drained(&self, n: u64, limit: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            let seen = self.lookups();
            if seen >= n {
                return Ok(());
            }
            if t.elapsed() > limit {
                return Err(format!("Open vSwitch looked up {seen} of {n} packets sent in {} s", limit.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The megaflows its datapath holds now (`upcall/show`'s current count).
    pub fn megaflows(&self) -> usize {
        self.appctl(&["upcall/show"])
            .ok()
            .and_then(|t| {
                let after = t.split("(current ").nth(1)?;
                after.split(')').next()?.trim().parse().ok()
            })
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

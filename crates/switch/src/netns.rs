//! Network namespaces and veth pairs for end-to-end tests and the
//! forwarding benchmark (driving `ip` from iproute2).
//!
//! Invariant: everything created here is removed when its handle drops,
//! including on a panic in the middle of a test; names carry the process id
//! so concurrent runs never collide; traffic stays inside these namespaces.

use std::io;
use std::process::{Command, Output};

/// Runs a command, turning a non-zero exit into an error that quotes it.
pub fn run(args: &[&str]) -> io::Result<Output> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Why namespaces cannot be used here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (network namespaces and AF_PACKET need it)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    // Unique per process and thread: tests probe concurrently.
    let tid: String = format!("{:?}", std::thread::current().id()).chars().filter(char::is_ascii_digit).collect();
    let probe = format!("kairo-probe-{}-{tid}", std::process::id());
    match run(&["ip", "netns", "add", &probe]) {
        Ok(_) => {
            let _ = run(&["ip", "netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> io::Result<Netns> {
        let _ = run(&["ip", "netns", "del", name]); // a leftover of a killed run
        run(&["ip", "netns", "add", name])?;
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
    /// `ip -n NAME ...`
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        run(&a)
    }
    /// A command run inside the namespace (`ip netns exec NAME ...`).
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair: `outer` stays in this namespace (for the switch), `inner`
/// goes into `ns` with `addr` (CIDR) and is brought up. Deleted on drop.
pub struct Veth {
    pub outer: String,
    pub inner: String,
    /// The inner end's MAC address.
    pub inner_mac: String,
}

impl Veth {
    /// A veth pair whose inner end (in `ns`) has IPv6 on, with the IPv6
    /// address `addr6` (`fd00::1/64`) usable at once (no duplicate address
    /// detection) and no router solicitations; the outer end stays quiet.
    pub fn new_v6(outer: &str, inner: &str, ns: &Netns, addr6: &str) -> io::Result<Veth> {
        let v = Veth::new(outer, inner, ns, None)?;
        for (key, val) in [("disable_ipv6", "0"), ("router_solicitations", "0"), ("accept_ra", "0")] {
            let _ = ns.cmd("sysctl").args(["-qw", &format!("net.ipv6.conf.{inner}.{key}={val}")]).output();
        }
        let out = ns.ip(&["-6", "addr", "add", addr6, "dev", inner, "nodad"])?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ip -6 addr add {addr6} dev {inner}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(v)
    }

    pub fn new(outer: &str, inner: &str, ns: &Netns, addr: Option<&str>) -> io::Result<Veth> {
        let _ = run(&["ip", "link", "del", outer]);
        run(&["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])?;
        let mut v = Veth { outer: outer.to_string(), inner: inner.to_string(), inner_mac: String::new() };
        run(&["ip", "link", "set", inner, "netns", &ns.name])?;
        // No IPv6 chatter (router solicitations, DAD) on test links.
        let _ = ns.cmd("sysctl").args(["-qw", &format!("net.ipv6.conf.{inner}.disable_ipv6=1")]).output();
        let _ = run(&["sysctl", "-qw", &format!("net.ipv6.conf.{outer}.disable_ipv6=1")]);
        if let Some(a) = addr {
            ns.ip(&["addr", "add", a, "dev", inner])?;
        }
        ns.ip(&["link", "set", inner, "up"])?;
        run(&["ip", "link", "set", outer, "up"])?;
        let show = ns.ip(&["-br", "link", "show", inner])?;
        v.inner_mac = String::from_utf8_lossy(&show.stdout).split_whitespace().nth(2).unwrap_or_default().to_string();
        Ok(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.outer]);
    }
}

/// Moves the calling thread into namespace `name` (other threads stay where they are).
pub fn enter(name: &str) -> io::Result<()> {
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))?;
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    move_into_link_name_space(std::os::fd::AsFd::as_fd(&f), Some(LinkNameSpaceType::Network))?;
    Ok(())
}

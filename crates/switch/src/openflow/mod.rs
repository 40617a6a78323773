//! The switch's OpenFlow end: where controllers and `ovs-ofctl` connect.
//!
//! Layout: this file (targets in Open vSwitch's syntax, passive listeners,
//! active connections with backoff, the connection cap), [`conn`] (one
//! connection: framing, HELLO, ECHO and the dead-peer timeout), [`handle`]
//! (what each request does to the switch and what it answers), [`bundle`]
//! (bundles: opened, filled, committed atomically), [`events`] (outboxes
//! and PACKET_IN), [`client`] (kairo's changes sent as OpenFlow, for the
//! bench and tools).
//!
//! Invariants: a passive TCP target binds to 127.0.0.1 unless an address is
//! given; a passive Unix socket is created owner-only (`srwx------`); at most
//! [`OfLimits::connections`] connections are served at once (one thread each,
//! blocking reads: nothing here polls with sleeps); a message is at most
//! OpenFlow's 64 KiB, read into a buffer of that bound.

pub mod bundle;
pub mod client;
pub mod conn;
pub mod events;
pub mod handle;
pub mod meters;
pub mod ports;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::server::Served;
use crate::Switch;

/// Where the switch speaks OpenFlow, as `ovs-vsctl set-controller` and
/// `ovs-ofctl` name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `ptcp:PORT[:IP]`: listen (on 127.0.0.1 unless IP is given).
    PassiveTcp(SocketAddr),
    /// `punix:PATH`: listen on a Unix socket.
    PassiveUnix(PathBuf),
    /// `tcp:IP[:PORT]`: connect to a controller (port 6653 by default).
    ActiveTcp(SocketAddr),
    /// `unix:PATH`: connect to a controller's Unix socket.
    ActiveUnix(PathBuf),
}

/// OpenFlow's registered port.
pub const DEFAULT_PORT: u16 = 6653;

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("OpenFlow target `{s}`: {why}");
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad(&format!("`{p}` is not a TCP port")));
        let ip = |a: &str| {
            a.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| bad(&format!("`{a}` is not an IP address")))
        };
        if let Some(rest) = s.strip_prefix("ptcp:") {
            let (p, a) = match rest.split_once(':') {
                Some((p, a)) => (port(p)?, ip(a)?),
                None => (if rest.is_empty() { DEFAULT_PORT } else { port(rest)? }, IpAddr::V4(Ipv4Addr::LOCALHOST)),
            };
            Ok(Target::PassiveTcp(SocketAddr::new(a, p)))
        } else if let Some(rest) = s.strip_prefix("tcp:") {
            let (a, p) = match rest.rsplit_once(':') {
                Some((a, p)) if !a.is_empty() && !rest.ends_with(']') => (ip(a)?, port(p)?),
                _ => (ip(rest)?, DEFAULT_PORT),
            };
            Ok(Target::ActiveTcp(SocketAddr::new(a, p)))
        } else if let Some(p) = s.strip_prefix("punix:") {
            if p.is_empty() {
                return Err(bad("a path is needed"));
            }
            Ok(Target::PassiveUnix(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(bad("a path is needed"));
            }
            Ok(Target::ActiveUnix(PathBuf::from(p)))
        } else {
            Err(bad("expected ptcp:PORT[:IP], punix:PATH, tcp:IP[:PORT] or unix:PATH"))
        }
    }
}

/// Bounds on what OpenFlow peers may take of the switch.
#[derive(Clone, Debug)]
pub struct OfLimits {
    /// Connections served at once (over it, a new one is closed at once).
    pub connections: usize,
    /// Silence after which the switch sends ECHO_REQUEST; as long again
    /// without an answer and the peer is taken for dead.
    pub probe: Duration,
}

impl Default for OfLimits {
    fn default() -> OfLimits {
        OfLimits { connections: 64, probe: Duration::from_secs(5) }
    }
}

/// The datapath id: `--dpid`, or Open vSwitch's default, the lowest
/// non-zero Ethernet address among the ports (read from sysfs), or one made
/// from the port names when no port has an address.
pub fn default_dpid(port_names: &[String]) -> u64 {
    let mac = port_names
        .iter()
        .filter_map(|n| std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok())
        .filter_map(|a| kairo_flow::parse::parse_mac(a.trim()))
        .filter(|&m| m != 0)
        .min();
    mac.unwrap_or_else(|| {
        // FNV-1a over the names, folded to 48 bits, with the locally administered bit.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in port_names.iter().flat_map(|n| n.bytes().chain([0])) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        ((h & 0xffff_ffff_ffff) | 0x0200_0000_0000) & !0x0100_0000_0000
    })
}

/// Counts live connections against the cap.
struct Slots {
    used: AtomicUsize,
    max: usize,
}

impl Slots {
    fn take(self: &Arc<Self>) -> Option<SlotGuard> {
        let n = self.used.fetch_add(1, Ordering::SeqCst);
        if n >= self.max {
            self.used.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(SlotGuard(self.clone()))
    }
}

struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts serving `target`; returns once listening (or connecting) has begun.
pub fn serve(sw: Arc<Switch>, target: &Target, stop: Arc<AtomicBool>, limits: OfLimits) -> std::io::Result<Served> {
    let slots = Arc::new(Slots { used: AtomicUsize::new(0), max: limits.connections });
    let shared = conn::Shared::of(&sw);
    let name = format!("kairo-of-{}", short(target));
    match target.clone() {
        Target::PassiveTcp(addr) => {
            let l = TcpListener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("OpenFlow listener on {addr}: {e}")))?;
            let mut wake = l.local_addr()?;
            if wake.ip().is_unspecified() {
                wake.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            let t = std::thread::Builder::new().name(name).spawn(move || {
                for s in l.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(s) = s else { continue };
                    let _ = s.set_nodelay(true);
                    spawn_conn(&sw, &shared, &slots, &limits, &stop, conn::Stream::Tcp(s));
                }
            })?;
            Ok(Served::new(
                t,
                Box::new(move || {
                    let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
                }),
            ))
        }
        Target::PassiveUnix(path) => {
            let l = bind_unix(&path)?;
            let wake = path.clone();
            let t = std::thread::Builder::new().name(name).spawn(move || {
                for s in l.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(s) = s else { continue };
                    spawn_conn(&sw, &shared, &slots, &limits, &stop, conn::Stream::Unix(s));
                }
                let _ = std::fs::remove_file(&path);
            })?;
            Ok(Served::new(
                t,
                Box::new(move || {
                    let _ = UnixStream::connect(&wake);
                }),
            ))
        }
        // An active connection's thread sees the stop flag within its backoff.
        active => std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Reconnect with backoff: 1 s doubling to 8 s, reset by a session that lasted.
                let mut backoff = Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    let s = match &active {
                        Target::ActiveTcp(a) => TcpStream::connect_timeout(a, Duration::from_secs(5)).map(|s| {
                            let _ = s.set_nodelay(true);
                            conn::Stream::Tcp(s)
                        }),
                        Target::ActiveUnix(p) => UnixStream::connect(p).map(conn::Stream::Unix),
                        _ => return,
                    };
                    if let Ok(s) = s {
                        let started = std::time::Instant::now();
                        conn::run(&sw, &shared, &limits, &stop, s);
                        if started.elapsed() > Duration::from_secs(10) {
                            backoff = Duration::from_secs(1);
                        }
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
            })
            .map(|t| Served::new(t, Box::new(|| {}))),
    }
}

fn short(t: &Target) -> String {
    match t {
        Target::PassiveTcp(a) => format!("ptcp{}", a.port()),
        Target::ActiveTcp(a) => format!("tcp{}", a.port()),
        Target::PassiveUnix(_) => "punix".into(),
        Target::ActiveUnix(_) => "unix".into(),
    }
}

fn spawn_conn(
    sw: &Arc<Switch>,
    shared: &Arc<conn::Shared>,
    slots: &Arc<Slots>,
    limits: &OfLimits,
    stop: &Arc<AtomicBool>,
    s: conn::Stream,
) {
    let Some(guard) = slots.take() else {
        // Over the cap: closed at once (dropping the stream).
        return;
    };
    let (sw, shared, limits, stop) = (sw.clone(), shared.clone(), limits.clone(), stop.clone());
    let _ = std::thread::Builder::new().name("kairo-of-conn".into()).spawn(move || {
        let _guard = guard;
        conn::run(&sw, &shared, &limits, &stop, s);
    });
}

/// Binds an owner-only Unix socket, replacing only a stale socket.
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    let named = |kind: ErrorKind, what: &str| std::io::Error::new(kind, format!("{}: {what}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(named(ErrorKind::AddrInUse, "something is listening there"));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => return Err(named(ErrorKind::AlreadyExists, "exists and is not a socket; not replacing it")),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(named(e.kind(), &e.to_string())),
    }
    // Tight umask while binding so the socket is never open to others.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let l = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_open_vswitch_writes_them() {
        let t = |s: &str| s.parse::<Target>();
        assert_eq!(t("ptcp:6653"), Ok(Target::PassiveTcp("127.0.0.1:6653".parse().unwrap())));
        assert_eq!(t("ptcp:6653:0.0.0.0"), Ok(Target::PassiveTcp("0.0.0.0:6653".parse().unwrap())));
        assert_eq!(t("ptcp:"), Ok(Target::PassiveTcp("127.0.0.1:6653".parse().unwrap())));
        assert_eq!(t("tcp:10.0.0.1:6633"), Ok(Target::ActiveTcp("10.0.0.1:6633".parse().unwrap())));
        assert_eq!(t("tcp:10.0.0.1"), Ok(Target::ActiveTcp("10.0.0.1:6653".parse().unwrap())));
        assert_eq!(t("punix:/tmp/x.sock"), Ok(Target::PassiveUnix("/tmp/x.sock".into())));
        assert_eq!(t("unix:/tmp/x.sock"), Ok(Target::ActiveUnix("/tmp/x.sock".into())));
        for bad in ["ssl:1.2.3.4", "ptcp:notaport", "tcp:nohost:1", "punix:", "6653"] {
            let e = t(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_default_dpid_is_stable_and_locally_administered_without_addresses() {
        let names = vec!["kairo-nonexistent-a".to_string(), "kairo-nonexistent-b".to_string()];
        let d = default_dpid(&names);
        assert_eq!(d, default_dpid(&names));
        assert_eq!(d >> 48, 0);
        assert_eq!(d & 0x0200_0000_0000, 0x0200_0000_0000);
        assert_ne!(d, default_dpid(&names[..1]));
    }
}

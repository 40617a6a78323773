//! `kairo bench switch`: packets per second forwarded between two veth ports
//! by `kairo switch` (on AF_PACKET rings and on XDP sockets, the whole fast
//! path), beside the kernel's own bridge and, when it is installed, Open
//! vSwitch's userspace datapath forwarding between the same ports, in the
//! same run.
//!
//! Topology: a generator namespace and a sink namespace, each holding one end
//! of a veth pair; the other ends are the forwarder's ports (the switch's
//! AF_PACKET or AF_XDP ports, members of a Linux bridge, or the ports of a
//! private Open vSwitch bridge with `datapath_type=netdev`). The generator
//! blasts UDP frames of `flows` distinct 5-tuples (built once per run)
//! through a TPACKET_V3 TX ring for `secs` seconds; the sink counts what
//! arrives. Needs root.
//!
//! With `conntrack`, the forwarders run `kairo bench conntrack`'s stateful
//! firewall ([`FIREWALL`], loaded into kairo and Open vSwitch alike:
//! every packet through the connection tracker, new connections from port 1
//! committed) and every frame is a connection of its own, sent once: what
//! arrives per second is connections set up per second, through the whole
//! data path. The Linux bridge has no connection tracker without netfilter,
//! so it sits this mode out; after each run the forwarder's tracker must
//! hold the connections that arrived (a run that tracked nothing fails).
//!
//! Besides packets per second (not in the conntrack mode), one TCP stream
//! from the generator's namespace to the sink's for `secs`, twice: with
//! the veths' default offloads (checksums left partial, 64 KB
//! super-frames) and with them off on the namespaces' ends (`ethtool -K
//! tx off tso off gso off`), in Gbit/s received. A forwarder over which no
//! connection is made (or no byte arrives) gets "no connection".
//!
//! Invariant: every forwarder sees the same frames from the same generator
//! code on the same links; the figure reported is frames counted at the sink
//! divided by the sending time, never the generator's offered rate (TCP:
//! bytes the receiver read, divided by its reading time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairo_datapath::DpConfig;
use kairo_flow::{Field, FlowKey};
use kairo_maintain::EngineKind;
use kairo_switch::afpacket::AfPacket;
use kairo_switch::netns::{self, Netns, Veth};
use kairo_switch::port::PortKind;
use kairo_switch::{Attached, Port, PortCounters, Switch};

use crate::conntrack::FIREWALL;
use crate::Machine;

/// UDP destination port that marks benchmark frames at the sink.
const MARK_PORT: u64 = 9;

#[derive(Clone, Debug)]
pub struct FwdOpts {
    pub secs: f64,
    pub flows: usize,
    /// Frame length in bytes (without FCS), at least 60.
    pub frame_len: usize,
    /// Run the stateful firewall, each frame a new connection.
    pub conntrack: bool,
    /// kairo's forwarding threads, one row each.
    pub threads: Vec<usize>,
    /// How kairo attaches to the two links (AF_PACKET, AF_XDP): a row for
    /// each, with each number of threads.
    pub port_kinds: Vec<PortKind>,
    /// Trials of the search for kairo's sustained rate (the highest
    /// offered rate at which it drops nothing itself); 0: no search.
    pub sustained_trials: usize,
    pub progress: bool,
}

/// The most flows a run takes (their frames are built before it starts,
/// about 100 bytes each).
pub const MAX_FLOWS: usize = 16_000_000;

/// Plain forwarding between the two ports.
const L2: &str = "in_port=1 actions=output:2\nin_port=2 actions=output:1\n";

#[derive(Clone, Debug, serde::Serialize)]
pub struct FwdRow {
    pub forwarder: String,
    pub sent: u64,
    pub received: u64,
    pub offered_pps: f64,
    pub forwarded_pps: f64,
    pub loss_pct: f64,
    /// TCP Gbit/s with the default offloads and with them off (None: no
    /// connection; not measured in the conntrack mode).
    pub tcp_gbps: Option<f64>,
    pub tcp_off_gbps: Option<f64>,
    /// Frames the sink's kernel dropped (its ring full): lost after the
    /// forwarder, not in it.
    pub sink_dropped: u64,
    /// Frames the forwarder itself counted as dropped (kairo: its ports'
    /// receive rings overflowing and its transmit rings full), where it
    /// says.
    pub forwarder_dropped: Option<u64>,
    /// The highest rate offered (pps) at which the forwarder dropped
    /// nothing itself, found by a search of paced runs (kairo's rows;
    /// None where not searched).
    pub sustained_pps: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FwdReport {
    pub machine: Machine,
    pub frame_len: usize,
    pub flows: usize,
    pub secs: f64,
    pub conntrack: bool,
    pub rows: Vec<FwdRow>,
    /// Why a peer has no row (not installed, or not in this mode).
    pub notes: Vec<String>,
}

impl FwdReport {
    pub fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let gbps = |g: Option<f64>| g.map_or("no connection".to_string(), |g| format!("{g:.2}"));
                let lost = r.sent.saturating_sub(r.received);
                let inside = r.forwarder_dropped.map_or("-".to_string(), |d| d.to_string());
                let mut row = vec![
                    r.forwarder.clone(),
                    format!("{:.0}", r.offered_pps),
                    format!("{:.0}", r.forwarded_pps),
                    format!("{:.1}%", r.loss_pct),
                    format!("{lost}"),
                    inside,
                    r.sink_dropped.to_string(),
                ];
                if !self.conntrack {
                    row.push(r.sustained_pps.map_or("-".to_string(), |p| format!("{p:.0}")));
                    row.push(gbps(r.tcp_gbps));
                    row.push(gbps(r.tcp_off_gbps));
                }
                row
            })
            .collect();
        let mut t = if self.conntrack {
            format!(
                "Connections set up between two veth ports (stateful firewall, each {} B UDP frame a new connection, up to {} in {:.1} s); {} ({} cores)\n",
                self.frame_len, self.flows, self.secs, self.machine.cpu, self.machine.cores
            )
        } else {
            format!(
                "Forwarding between two veth ports: {} B frames, {} flows, {:.1} s each; {} ({} cores)\n",
                self.frame_len, self.flows, self.secs, self.machine.cpu, self.machine.cores
            )
        };
        let rate = if self.conntrack { "connections/s" } else { "forwarded pps" };
        let mut head =
            vec!["forwarder", "offered pps", rate, "loss", "lost", "dropped in forwarder", "dropped at sink"];
        if !self.conntrack {
            head.extend(["sustained pps", "TCP Gbit/s (default offloads)", "TCP Gbit/s (offloads off)"]);
        }
        t += &crate::table(&head, &rows);
        // Each of kairo's rows against each peer's.
        let (ours, peers): (Vec<&FwdRow>, Vec<&FwdRow>) =
            self.rows.iter().partition(|r| r.forwarder.starts_with("kairo"));
        for a in &ours {
            for b in peers.iter().filter(|b| b.forwarded_pps > 0.0) {
                t += &format!("{} / {}: {:.2}x\n", a.forwarder, b.forwarder, a.forwarded_pps / b.forwarded_pps);
            }
        }
        t += "lost: sent by the generator, not counted at the sink; dropped in forwarder: what the forwarder\n";
        t += "itself counted (kairo: its receive rings overflowing, its transmit rings full; - where it does not\n";
        t += "say); dropped at sink: the sink's receive ring overflowing. The rest was lost between them (veths).\n";
        if !self.conntrack {
            t += "sustained pps: the highest rate offered at which kairo dropped nothing itself (its whole run's\n";
            t += "offer if it dropped nothing there, else a bisection of 1 s paced runs; - where not searched).\n";
        }
        for n in &self.notes {
            t += &format!("{n}\n");
        }
        t
    }
}

/// The benchmark frame of flow `i` (50,000 source ports per source address).
fn frame(i: usize, len: usize) -> Vec<u8> {
    let src = 0x0a63_0001 + (i / 50_000) as u32;
    let k = FlowKey::ipv4(0, 0x0200_0000_0a01, 0x0200_0000_0a02, src, 0x0a64_0002, 17)
        .with(Field::TpSrc, 10_000 + (i % 50_000) as u64)
        .with(Field::TpDst, MARK_PORT);
    let payload = vec![0u8; len.max(60).saturating_sub(42)];
    kairo_wire::emit::frame(&k, &payload)
}

/// What one forwarder's run counted.
struct Counted {
    sent: u64,
    received: u64,
    /// Seconds the generator sent for.
    secs: f64,
    /// Frames the sink's kernel dropped.
    sink_dropped: u64,
}

/// Runs the generator and the sink around the forwarder for `secs` (in the
/// conntrack mode, until every frame was sent once).
fn measure(
    opts: &FwdOpts,
    frames: &Arc<Vec<Vec<u8>>>,
    gen: (&str, &str),
    sink: (&str, &str),
) -> Result<Counted, String> {
    measure_at(opts, frames, (None, opts.secs), gen, sink)
}

/// The run's frames, one per flow, built once (the generator sends them
/// in turn; every forwarder and trial gets the same).
fn frames(opts: &FwdOpts) -> Arc<Vec<Vec<u8>>> {
    Arc::new((0..opts.flows.max(1)).map(|i| frame(i, opts.frame_len)).collect())
}

/// As [`measure`], for `secs`, the generator paced to `rate` frames per
/// second if given (else as fast as it can).
fn measure_at(
    opts: &FwdOpts,
    frames: &Arc<Vec<Vec<u8>>>,
    (rate, secs): (Option<f64>, f64),
    (gen_ns, gen_if): (&str, &str),
    (sink_ns, sink_if): (&str, &str),
) -> Result<Counted, String> {
    let frames = frames.clone();
    let stop_sink = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let sink = {
        let (ns, dev, stop, ready) = (sink_ns.to_string(), sink_if.to_string(), stop_sink.clone(), ready.clone());
        std::thread::spawn(move || -> Result<(u64, u64), String> {
            netns::enter(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
            let mut p = AfPacket::open(&dev).map_err(|e| e.to_string())?;
            let _ = p.kernel_drops(); // from zero
            let c = PortCounters::default();
            let (mut got, mut pool, mut n) = (Vec::new(), Vec::new(), 0u64);
            ready.fetch_add(1, Ordering::SeqCst);
            let mut pfd = [libc::pollfd { fd: p.fd().unwrap_or(-1), events: libc::POLLIN, revents: 0 }];
            while !stop.load(Ordering::Relaxed) {
                if p.recv(&mut got, &mut pool, 4096, &c) == 0 {
                    // SAFETY: a valid pollfd array of length 1.
                    unsafe { libc::poll(pfd.as_mut_ptr(), 1, 10) };
                }
                for f in got.drain(..) {
                    let (k, _) = kairo_wire::parse(&f.bytes, 0);
                    n += (k.get(Field::TpDst) == MARK_PORT && k.get(Field::IpProto) == 17) as u64;
                    pool.push(f.bytes);
                }
                pool.truncate(4096);
            }
            Ok((n, p.kernel_drops()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready.load(Ordering::SeqCst) == 0 && !sink.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let gen = {
        let (ns, dev, once) = (gen_ns.to_string(), gen_if.to_string(), opts.conntrack);
        std::thread::spawn(move || -> Result<(u64, f64), String> {
            netns::enter(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
            let mut p = AfPacket::open(&dev).map_err(|e| e.to_string())?;
            let c = PortCounters::default();
            let start = Instant::now();
            let mut i = 0usize;
            while start.elapsed().as_secs_f64() < secs && !(once && i >= frames.len()) {
                for _ in 0..64 {
                    if once && i >= frames.len() {
                        break;
                    }
                    // Paced: ahead of the rate, wait (in short sleeps:
                    // batches are 64 frames, far longer than a sleep's slack).
                    if let Some(r) = rate {
                        let due = Duration::from_secs_f64(i as f64 / r);
                        if let Some(ahead) = due.checked_sub(start.elapsed()) {
                            p.flush();
                            std::thread::sleep(ahead);
                        }
                    }
                    let before = PortCounters::get(&c.tx_dropped);
                    p.send(&frames[i % frames.len()], None, &c);
                    i += 1;
                    if PortCounters::get(&c.tx_dropped) != before {
                        // The TX ring is full: let the kernel drain it.
                        p.flush();
                        std::thread::yield_now();
                    }
                }
                p.flush();
            }
            Ok((PortCounters::get(&c.tx_packets), start.elapsed().as_secs_f64()))
        })
    };
    let (sent, secs) = gen.join().map_err(|_| "generator thread panicked".to_string())??;
    std::thread::sleep(Duration::from_millis(300)); // let in-flight frames arrive
    stop_sink.store(true, Ordering::SeqCst);
    let (received, sink_dropped) = sink.join().map_err(|_| "sink thread panicked".to_string())??;
    Ok(Counted { sent, received, secs, sink_dropped })
}

/// Seconds of each paced trial of the sustained-rate search.
const TRIAL_SECS: f64 = 1.0;

/// The highest rate the forwarder takes without dropping a frame itself:
/// the full-rate run's offer if it dropped nothing there (`full`: offered
/// pps and drops), else a bisection of paced trials between 0 and that
/// offer. Each trial's verdict is the forwarder's own drop count over it
/// (`dropped`: the running total, read after a housekeeping round), and
/// the rate kept is the one the generator achieved, never the one asked.
fn sustained(
    opts: &FwdOpts,
    frames: &Arc<Vec<Vec<u8>>>,
    full: (f64, u64),
    (gen, sink): ((&str, &str), (&str, &str)),
    dropped: &dyn Fn() -> u64,
) -> Result<f64, String> {
    let (offered, full_drops) = full;
    if full_drops == 0 {
        return Ok(offered);
    }
    let (mut lo, mut hi) = (0.0f64, offered);
    for _ in 0..opts.sustained_trials {
        let ask = (lo + hi) / 2.0;
        let before = dropped();
        let c = measure_at(opts, frames, (Some(ask), TRIAL_SECS.min(opts.secs)), gen, sink)?;
        let achieved = c.sent as f64 / c.secs.max(1e-9);
        if dropped() == before {
            lo = lo.max(achieved);
        } else {
            hi = ask;
        }
    }
    Ok(lo)
}

/// In the conntrack mode, `tracked` (the connections the forwarder's
/// tracker holds) must account for what arrived.
fn check_tracked(opts: &FwdOpts, name: &str, c: &Counted, tracked: u64) -> Result<(), String> {
    if opts.conntrack && tracked < c.received {
        return Err(format!("{name}: {} connections arrived but its tracker holds {tracked}", c.received));
    }
    Ok(())
}

fn row(name: &str, c: &Counted) -> FwdRow {
    let Counted { sent, received, secs, sink_dropped } = *c;
    FwdRow {
        forwarder: name.into(),
        sent,
        received,
        offered_pps: sent as f64 / secs.max(1e-9),
        forwarded_pps: received as f64 / secs.max(1e-9),
        loss_pct: if sent == 0 { 0.0 } else { 100.0 * (sent.saturating_sub(received)) as f64 / sent as f64 },
        tcp_gbps: None,
        tcp_off_gbps: None,
        sink_dropped,
        forwarder_dropped: None,
        sustained_pps: None,
    }
}

/// Addresses of the TCP stream's ends (the generator's, the sink's).
const TCP_NET: (&str, &str) = ("10.213.0.1", "10.213.0.2");
const TCP_PORT: u16 = 5201;

/// One TCP stream from the generator's namespace to the sink's for
/// `secs`: Gbit/s received, None if no connection was made or nothing
/// arrived. Every wait is bounded.
fn measure_tcp(secs: f64, gen_ns: &str, sink_ns: &str) -> Result<Option<f64>, String> {
    use std::io::{Read, Write};
    let (listening_tx, listening_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let sink = {
        let ns = sink_ns.to_string();
        std::thread::spawn(move || -> Result<Option<(u64, f64)>, String> {
            let listen = || -> Result<std::net::TcpListener, String> {
                netns::enter(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
                let l = std::net::TcpListener::bind((TCP_NET.1, TCP_PORT)).map_err(|e| format!("listen: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(l)
            };
            let l = match listen() {
                Ok(l) => {
                    let _ = listening_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = listening_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let deadline = Instant::now() + Duration::from_secs_f64(secs + 5.0);
            let mut c = loop {
                match l.accept() {
                    Ok((c, _)) => break c,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => return Ok(None),
                }
            };
            c.set_nonblocking(false).map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 1 << 20];
            let (mut n, mut start) = (0u64, None);
            while Instant::now() < deadline {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        start.get_or_insert_with(Instant::now);
                        n += k as u64;
                    }
                }
            }
            Ok(start.map(|s| (n, s.elapsed().as_secs_f64())))
        })
    };
    listening_rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "the TCP sink did not start".to_string())??;
    let gen = {
        let ns = gen_ns.to_string();
        std::thread::spawn(move || -> Result<(), String> {
            netns::enter(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
            let to = std::net::SocketAddr::from((
                TCP_NET.1.parse::<std::net::Ipv4Addr>().map_err(|e| e.to_string())?,
                TCP_PORT,
            ));
            let Ok(mut c) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3)) else { return Ok(()) };
            c.set_write_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
            let buf = vec![0x5au8; 1 << 18];
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < secs {
                if c.write_all(&buf).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };
    gen.join().map_err(|_| "TCP sender panicked".to_string())??;
    let got = sink.join().map_err(|_| "TCP sink panicked".to_string())??;
    Ok(got.filter(|&(n, t)| n > 0 && t > 0.0).map(|(n, t)| n as f64 * 8.0 / t / 1e9))
}

/// Turns the namespaces' ends' offloads off or back on.
fn offloads(gen: &Netns, vg: &Veth, sink: &Netns, vs: &Veth, on: bool) -> Result<(), String> {
    let v = if on { "on" } else { "off" };
    for (ns, dev) in [(gen, &vg.inner), (sink, &vs.inner)] {
        let out = ns
            .cmd("ethtool")
            .args(["-K", dev, "tx", v, "tso", v, "gso", v])
            .output()
            .map_err(|e| format!("ethtool: {e} (is it installed?)"))?;
        if !out.status.success() {
            return Err(format!("ethtool -K {dev}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    Ok(())
}

/// The TCP columns of a forwarder's row (not in the conntrack mode).
fn tcp_columns(
    opts: &FwdOpts,
    r: &mut FwdRow,
    (gen, vg): (&Netns, &Veth),
    (sink, vs): (&Netns, &Veth),
) -> Result<(), String> {
    if opts.conntrack {
        return Ok(());
    }
    r.tcp_gbps = measure_tcp(opts.secs, &gen.name, &sink.name)?;
    offloads(gen, vg, sink, vs, false)?;
    let off = measure_tcp(opts.secs, &gen.name, &sink.name);
    offloads(gen, vg, sink, vs, true)?;
    r.tcp_off_gbps = off?;
    Ok(())
}

/// A Linux bridge, deleted on drop.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = netns::run(&["ip", "link", "del", &self.0]);
    }
}

pub fn run(opts: &FwdOpts) -> Result<FwdReport, String> {
    if let Some(why) = netns::unavailable() {
        return Err(format!("bench switch needs network namespaces: {why}"));
    }
    if opts.flows > MAX_FLOWS {
        return Err(format!("--flows {}: at most {MAX_FLOWS} (each flow's frame is built in memory)", opts.flows));
    }
    if opts.frame_len < 60 || opts.frame_len > kairo_switch::afpacket::MAX_FRAME {
        return Err(format!("--size must be 60..{} bytes", kairo_switch::afpacket::MAX_FRAME));
    }
    let pid = std::process::id() % 100_000;
    let io = |e: std::io::Error| e.to_string();
    let gen = Netns::new(&format!("kairo-bg{pid}")).map_err(io)?;
    let sink = Netns::new(&format!("kairo-bs{pid}")).map_err(io)?;
    let vg =
        Veth::new(&format!("kbg{pid}"), &format!("kbg{pid}i"), &gen, Some(&format!("{}/24", TCP_NET.0))).map_err(io)?;
    let vs = Veth::new(&format!("kbs{pid}"), &format!("kbs{pid}i"), &sink, Some(&format!("{}/24", TCP_NET.1)))
        .map_err(io)?;
    let mut rows = Vec::new();
    let frames = frames(opts);

    // kairo switch: the two outer ends as its ports (AF_PACKET rings, or
    // XDP sockets with an XDP program on the links), L2 flows between
    // them, with each number of forwarding threads asked.
    let mut notes = Vec::new();
    let runs: Vec<(PortKind, usize)> =
        opts.port_kinds.iter().flat_map(|&k| opts.threads.iter().map(move |&t| (k, t))).collect();
    for (kind, threads) in runs {
        let mut name = "kairo switch".to_string();
        if opts.port_kinds.len() > 1 || kind != PortKind::AfPacket {
            name.push_str(match kind {
                PortKind::AfXdp => ", AF_XDP",
                PortKind::AfPacket | PortKind::Tap => ", AF_PACKET",
            });
        }
        if opts.threads.len() > 1 {
            name.push_str(&format!(", {threads} thread(s)"));
        }
        let mut ports = Vec::new();
        for (i, v) in [&vg, &vs].iter().enumerate() {
            match kind.open(&v.outer) {
                Ok(io) => ports.push(Attached {
                    ofport: i as u32 + 1,
                    name: v.outer.clone(),
                    io,
                    counters: Default::default(),
                }),
                // AF_XDP needs a kernel and privileges that may be missing:
                // said, and the run goes on without those rows.
                Err(e) if kind == PortKind::AfXdp => {
                    notes.push(format!("{name}: {e}, no row"));
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if ports.len() < 2 {
            continue;
        }
        let pb = crate::progress_bar(opts.progress, 1, format!("{name}: {:.1} s", opts.secs));
        let flows =
            kairo_ofproto::parse_flow_file(if opts.conntrack { FIREWALL } else { L2 }).map_err(|e| e.to_string())?;
        let pipeline = kairo_xlate::Pipeline::from_parts(flows, Vec::new()).map_err(|e| e.to_string())?;
        let info: Vec<_> = ports.iter().map(Attached::info).collect();
        let counters: Vec<_> = info.iter().map(|p: &kairo_switch::PortInfo| p.counters.clone()).collect();
        let sw = Switch::new(pipeline, EngineKind::Incremental, DpConfig::default(), info);
        sw.pmd_threads.store(threads, Ordering::Relaxed);
        let sw = Arc::new(sw);
        let stop = Arc::new(AtomicBool::new(false));
        let fwd = {
            let (sw, stop) = (sw.clone(), stop.clone());
            std::thread::spawn(move || sw.forward(ports, &stop))
        };
        let r = measure(opts, &frames, (&gen.name, &vg.inner), (&sink.name, &vs.inner)).and_then(|r| {
            let mut row = row(&name, &r);
            // What kairo dropped itself during the packet run (before TCP):
            // the generator's port's receive ring, the sink's port's transmit.
            let dropped = || {
                std::thread::sleep(Duration::from_millis(250)); // a housekeeping round reads the ring's count
                let get = |i: usize, f: fn(&PortCounters) -> &AtomicU64| PortCounters::get(f(&counters[i]));
                get(0, |c| &c.rx_dropped) + get(1, |c| &c.tx_dropped)
            };
            let d = dropped();
            row.forwarder_dropped = Some(d);
            if !opts.conntrack && opts.sustained_trials > 0 {
                let full = (row.offered_pps, d);
                let links = ((gen.name.as_str(), vg.inner.as_str()), (sink.name.as_str(), vs.inner.as_str()));
                row.sustained_pps = Some(sustained(opts, &frames, full, links, &dropped)?);
            }
            tcp_columns(opts, &mut row, (&gen, &vg), (&sink, &vs))?;
            Ok((r, row))
        });
        stop.store(true, Ordering::SeqCst);
        let _ = fwd.join();
        let (r, row) = r?;
        let tracked = sw.ct().stats().conns;
        check_tracked(opts, &name, &r, tracked)?;
        rows.push(row);
        pb.finish_and_clear();
    }

    // Open vSwitch's userspace datapath on the same two links: on AF_PACKET
    // sockets, and on XDP sockets where kairo ran on them too (Debian's
    // build has AF_XDP ports, through libxdp).
    if crate::ovs::available() {
        let version = crate::ovs::version().unwrap_or_default();
        let version = version.rsplit(' ').next().unwrap_or("").to_string();
        for kind in [PortKind::AfPacket, PortKind::AfXdp] {
            let (port_type, what) = match kind {
                PortKind::AfXdp if opts.port_kinds.contains(&PortKind::AfXdp) => (Some("afxdp"), "userspace, AF_XDP"),
                PortKind::AfXdp => continue,
                _ => (None, "userspace"),
            };
            let name = format!("Open vSwitch {version} ({what})");
            let pb = crate::progress_bar(opts.progress, 1, format!("{name}: {:.1} s", opts.secs));
            let ovs = crate::ovs::PrivateOvs::start()?;
            let flows = if opts.conntrack { FIREWALL } else { L2 };
            if let Err(e) = ovs.bridge_on_as("br0", &[&vg.outer, &vs.outer], port_type, flows) {
                if port_type.is_none() {
                    return Err(e);
                }
                notes.push(format!("{name}: {e}, no row"));
                continue;
            }
            let r = measure(opts, &frames, (&gen.name, &vg.inner), (&sink.name, &vs.inner))?;
            check_tracked(opts, &name, &r, ovs.conntrack_total())?;
            let mut row = row(&name, &r);
            tcp_columns(opts, &mut row, (&gen, &vg), (&sink, &vs))?;
            rows.push(row);
            pb.finish_and_clear();
            // Stopped by signal, Open vSwitch leaves its XDP programs on
            // the links: they go before the next forwarder runs.
            drop(ovs);
            if port_type.is_some() {
                for v in [&vg, &vs] {
                    for mode in ["xdp", "xdpgeneric"] {
                        let _ = netns::run(&["ip", "link", "set", "dev", &v.outer, mode, "off"]);
                    }
                }
            }
        }
    } else {
        notes.push("Open vSwitch: not installed here (scripts/ovs/install-ovs.sh installs it), no row".to_string());
    }

    // The kernel bridge on the same two links.
    if opts.conntrack {
        notes.push("Linux bridge: no connection tracker without netfilter, no row in this mode".to_string());
    } else {
        let pb = crate::progress_bar(opts.progress, 1, format!("Linux bridge: {:.1} s", opts.secs));
        let br = Bridge(format!("kbb{pid}"));
        netns::run(&["ip", "link", "add", &br.0, "type", "bridge"]).map_err(io)?;
        for v in [&vg, &vs] {
            netns::run(&["ip", "link", "set", &v.outer, "master", &br.0]).map_err(io)?;
        }
        netns::run(&["ip", "link", "set", &br.0, "up"]).map_err(io)?;
        let r = measure(opts, &frames, (&gen.name, &vg.inner), (&sink.name, &vs.inner))?;
        let mut row = row("Linux bridge", &r);
        tcp_columns(opts, &mut row, (&gen, &vg), (&sink, &vs))?;
        rows.push(row);
        pb.finish_and_clear();
    }
    Ok(FwdReport {
        machine: Machine::detect(),
        frame_len: opts.frame_len,
        flows: opts.flows,
        secs: opts.secs,
        conntrack: opts.conntrack,
        rows,
        notes,
    })
}

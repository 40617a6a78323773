//! `kairo bench switch`: packets per second forwarded between two veth ports
//! by `kairo switch` (AF_PACKET rings, the whole fast path), beside the
//! kernel's own bridge and, when it is installed, Open vSwitch's userspace
//! datapath forwarding between the same ports, in the same run.
//!
//! Topology: a generator namespace and a sink namespace, each holding one end
//! of a veth pair; the other ends are the forwarder's ports (the switch's
//! AF_PACKET ports, members of a Linux bridge, or the ports of a private Open
//! vSwitch bridge with `datapath_type=netdev`). The generator blasts UDP
//! frames of `flows` distinct 5-tuples through a TPACKET_V3 TX ring for
//! `secs` seconds; the sink counts what arrives. Needs root.
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
//! Invariant: every forwarder sees the same frames from the same generator
//! code on the same links; the figure reported is frames counted at the sink
//! divided by the sending time, never the generator's offered rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairo_datapath::DpConfig;
use kairo_flow::{Field, FlowKey};
use kairo_maintain::EngineKind;
use kairo_switch::afpacket::AfPacket;
use kairo_switch::netns::{self, Netns, Veth};
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
                vec![
                    r.forwarder.clone(),
                    format!("{:.0}", r.offered_pps),
                    format!("{:.0}", r.forwarded_pps),
                    format!("{:.1}%", r.loss_pct),
                ]
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
        t += &crate::table(&["forwarder", "offered pps", rate, "loss"], &rows);
        if let Some((a, others)) = self.rows.split_first() {
            for b in others.iter().filter(|b| b.forwarded_pps > 0.0) {
                t += &format!("{} / {}: {:.2}x\n", a.forwarder, b.forwarder, a.forwarded_pps / b.forwarded_pps);
            }
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
}

/// Runs the generator and the sink around the forwarder for `secs` (in the
/// conntrack mode, until every frame was sent once).
fn measure(opts: &FwdOpts, gen_ns: &str, gen_if: &str, sink_ns: &str, sink_if: &str) -> Result<Counted, String> {
    let frames: Vec<Vec<u8>> = (0..opts.flows.max(1)).map(|i| frame(i, opts.frame_len)).collect();
    let stop_sink = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));
    let sink = {
        let (ns, dev, stop, ready) = (sink_ns.to_string(), sink_if.to_string(), stop_sink.clone(), ready.clone());
        std::thread::spawn(move || -> Result<u64, String> {
            netns::enter(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
            let mut p = AfPacket::open(&dev).map_err(|e| e.to_string())?;
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
            Ok(n)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready.load(Ordering::SeqCst) == 0 && !sink.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let gen = {
        let (ns, dev, secs, once) = (gen_ns.to_string(), gen_if.to_string(), opts.secs, opts.conntrack);
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
    let received = sink.join().map_err(|_| "sink thread panicked".to_string())??;
    Ok(Counted { sent, received, secs })
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
    let Counted { sent, received, secs } = *c;
    FwdRow {
        forwarder: name.into(),
        sent,
        received,
        offered_pps: sent as f64 / secs.max(1e-9),
        forwarded_pps: received as f64 / secs.max(1e-9),
        loss_pct: if sent == 0 { 0.0 } else { 100.0 * (sent.saturating_sub(received)) as f64 / sent as f64 },
    }
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
    let vg = Veth::new(&format!("kbg{pid}"), &format!("kbg{pid}i"), &gen, None).map_err(io)?;
    let vs = Veth::new(&format!("kbs{pid}"), &format!("kbs{pid}i"), &sink, None).map_err(io)?;
    let mut rows = Vec::new();

    // kairo switch: the two outer ends as AF_PACKET ports, L2 flows between them.
    let pb = crate::progress_bar(opts.progress, 1, format!("kairo switch: {:.1} s", opts.secs));
    {
        let flows =
            kairo_ofproto::parse_flow_file(if opts.conntrack { FIREWALL } else { L2 }).map_err(|e| e.to_string())?;
        let pipeline = kairo_xlate::Pipeline::from_parts(flows, Vec::new()).map_err(|e| e.to_string())?;
        let mut ports = Vec::new();
        for (i, v) in [&vg, &vs].iter().enumerate() {
            let io = AfPacket::open(&v.outer).map_err(|e| e.to_string())?;
            ports.push(Attached {
                ofport: i as u32 + 1,
                name: v.outer.clone(),
                io: Box::new(io),
                counters: Default::default(),
            });
        }
        let info = ports.iter().map(Attached::info).collect();
        let sw = Arc::new(Switch::new(pipeline, EngineKind::Incremental, DpConfig::default(), info));
        let stop = Arc::new(AtomicBool::new(false));
        let fwd = {
            let (sw, stop) = (sw.clone(), stop.clone());
            std::thread::spawn(move || sw.forward(ports, &stop))
        };
        let r = measure(opts, &gen.name, &vg.inner, &sink.name, &vs.inner);
        stop.store(true, Ordering::SeqCst);
        let _ = fwd.join();
        let r = r?;
        let tracked = sw.dp.lock().map_or(0, |dp| dp.ct.stats().conns);
        check_tracked(opts, "kairo switch", &r, tracked)?;
        rows.push(row("kairo switch", &r));
    }
    pb.finish_and_clear();

    // Open vSwitch's userspace datapath on the same two links.
    let mut notes = Vec::new();
    if crate::ovs::available() {
        let pb = crate::progress_bar(opts.progress, 1, format!("Open vSwitch: {:.1} s", opts.secs));
        let ovs = crate::ovs::PrivateOvs::start()?;
        ovs.bridge_on("br0", &[&vg.outer, &vs.outer], if opts.conntrack { FIREWALL } else { L2 })?;
        let r = measure(opts, &gen.name, &vg.inner, &sink.name, &vs.inner)?;
        check_tracked(opts, "Open vSwitch", &r, ovs.conntrack_total())?;
        let version = crate::ovs::version().unwrap_or_default();
        let version = version.rsplit(' ').next().unwrap_or("");
        rows.push(row(&format!("Open vSwitch {version} (userspace)"), &r));
        pb.finish_and_clear();
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
        let r = measure(opts, &gen.name, &vg.inner, &sink.name, &vs.inner)?;
        rows.push(row("Linux bridge", &r));
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

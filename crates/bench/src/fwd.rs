//! `kairo bench switch`: packets per second forwarded between two veth ports
//! by `kairo switch` (AF_PACKET rings, the whole fast path), beside the
//! kernel's own bridge forwarding between the same ports, in the same run.
//!
//! Topology: a generator namespace and a sink namespace, each holding one end
//! of a veth pair; the other ends are the forwarder's ports (the switch's
//! AF_PACKET ports, or members of a Linux bridge). The generator blasts UDP
//! frames of `flows` distinct 5-tuples through a TPACKET_V3 TX ring for
//! `secs` seconds; the sink counts what arrives. Needs root.
//!
//! Invariant: both forwarders see the same frames from the same generator
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

use crate::Machine;

/// UDP destination port that marks benchmark frames at the sink.
const MARK_PORT: u64 = 9;

#[derive(Clone, Debug)]
pub struct FwdOpts {
    pub secs: f64,
    pub flows: usize,
    /// Frame length in bytes (without FCS), at least 60.
    pub frame_len: usize,
    pub progress: bool,
}

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
    pub rows: Vec<FwdRow>,
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
        let mut t = format!(
            "Forwarding between two veth ports: {} B frames, {} flows, {:.1} s each; {} ({} cores)\n",
            self.frame_len, self.flows, self.secs, self.machine.cpu, self.machine.cores
        );
        t += &crate::table(&["forwarder", "offered pps", "forwarded pps", "loss"], &rows);
        if let [a, b] = &self.rows[..] {
            if b.forwarded_pps > 0.0 {
                t += &format!("{} / {}: {:.2}x\n", a.forwarder, b.forwarder, a.forwarded_pps / b.forwarded_pps);
            }
        }
        t
    }
}

/// The benchmark frame of flow `i`.
fn frame(i: usize, len: usize) -> Vec<u8> {
    let k = FlowKey::ipv4(0, 0x0200_0000_0a01, 0x0200_0000_0a02, 0x0a63_0001, 0x0a63_0002, 17)
        .with(Field::TpSrc, 10_000 + i as u64)
        .with(Field::TpDst, MARK_PORT);
    let payload = vec![0u8; len.max(60).saturating_sub(42)];
    kairo_wire::emit::frame(&k, &payload)
}

/// Runs the generator and the sink around `forwarder` for `secs`; returns (sent, received).
fn measure(opts: &FwdOpts, gen_ns: &str, gen_if: &str, sink_ns: &str, sink_if: &str) -> Result<(u64, u64), String> {
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
                    let (k, _) = kairo_wire::parse(&f, 0);
                    n += (k.get(Field::TpDst) == MARK_PORT && k.get(Field::IpProto) == 17) as u64;
                    pool.push(f);
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
        let (ns, dev, secs) = (gen_ns.to_string(), gen_if.to_string(), opts.secs);
        std::thread::spawn(move || -> Result<u64, String> {
            netns::enter(&ns).map_err(|e| format!("entering {ns}: {e}"))?;
            let mut p = AfPacket::open(&dev).map_err(|e| e.to_string())?;
            let c = PortCounters::default();
            let start = Instant::now();
            let mut i = 0usize;
            while start.elapsed().as_secs_f64() < secs {
                for _ in 0..64 {
                    let before = PortCounters::get(&c.tx_dropped);
                    p.send(&frames[i % frames.len()], &c);
                    i += 1;
                    if PortCounters::get(&c.tx_dropped) != before {
                        // The TX ring is full: let the kernel drain it.
                        p.flush();
                        std::thread::yield_now();
                    }
                }
                p.flush();
            }
            Ok(PortCounters::get(&c.tx_packets))
        })
    };
    let sent = gen.join().map_err(|_| "generator thread panicked".to_string())??;
    std::thread::sleep(Duration::from_millis(300)); // let in-flight frames arrive
    stop_sink.store(true, Ordering::SeqCst);
    let received = sink.join().map_err(|_| "sink thread panicked".to_string())??;
    Ok((sent, received))
}

fn row(name: &str, secs: f64, (sent, received): (u64, u64)) -> FwdRow {
    FwdRow {
        forwarder: name.into(),
        sent,
        received,
        offered_pps: sent as f64 / secs,
        forwarded_pps: received as f64 / secs,
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
        let flows = kairo_ofproto::parse_flow_file("in_port=1 actions=output:2\nin_port=2 actions=output:1\n")
            .map_err(|e| e.to_string())?;
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
        rows.push(row("kairo switch", opts.secs, r?));
    }
    pb.finish_and_clear();

    // The kernel bridge on the same two links.
    let pb = crate::progress_bar(opts.progress, 1, format!("Linux bridge: {:.1} s", opts.secs));
    {
        let br = Bridge(format!("kbb{pid}"));
        netns::run(&["ip", "link", "add", &br.0, "type", "bridge"]).map_err(io)?;
        for v in [&vg, &vs] {
            netns::run(&["ip", "link", "set", &v.outer, "master", &br.0]).map_err(io)?;
        }
        netns::run(&["ip", "link", "set", &br.0, "up"]).map_err(io)?;
        let r = measure(opts, &gen.name, &vg.inner, &sink.name, &vs.inner)?;
        rows.push(row("Linux bridge", opts.secs, r));
    }
    pb.finish_and_clear();
    Ok(FwdReport { machine: Machine::detect(), frame_len: opts.frame_len, flows: opts.flows, secs: opts.secs, rows })
}

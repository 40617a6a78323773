//! Offline replay: packets from pcap files through a pipeline and the full
//! fast path (EMC, megaflow classifier, upcalls), with what each port would
//! send written as one pcap file per port.
//!
//! Deterministic: the datapath clock is the capture's timestamps, inputs are
//! merged by timestamp (ties keep input order), and nothing depends on wall
//! time. Invariant: every output frame carries the timestamp of the input
//! frame that caused it; a malformed capture is an error naming the file and
//! the packet number, and nothing is written for a replay that fails to read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kairo_datapath::{execute::Sent, Datapath, DpConfig, DpStats};
use kairo_xlate::Pipeline;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::DataLink;

/// The snapshot length of the captures written (what tcpdump and Wireshark
/// use by default); a longer frame is written truncated to it, its original
/// length kept, as pcap records a truncated capture.
pub const SNAPLEN: u32 = 262_144;

/// A pcap writer of Ethernet frames with [`SNAPLEN`].
fn ethernet_writer(path: &Path) -> Result<PcapWriter<BufWriter<File>>, String> {
    let f = File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let header = PcapHeader { snaplen: SNAPLEN, datalink: DataLink::ETHERNET, ..PcapHeader::default() };
    PcapWriter::with_header(BufWriter::new(f), header).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One frame as a pcap record (truncated to [`SNAPLEN`] if longer).
fn record(ts: Duration, frame: &[u8]) -> PcapPacket<'_> {
    let kept = frame.len().min(SNAPLEN as usize);
    PcapPacket::new(ts, frame.len() as u32, &frame[..kept])
}

/// One input: a capture and the port its packets arrive on.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    pub in_port: u32,
}

/// Parses `FILE[=PORT]` (port 1 when not given), or `DIR`: every `in-N.pcap`
/// in it, arriving on port N (what `kairo gen` writes).
pub fn parse_inputs(s: &str) -> Result<Vec<Input>, String> {
    let dir = Path::new(s);
    if !dir.is_dir() {
        return parse_input(s).map(|i| vec![i]);
    }
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {s}: {e}"))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(port) = name.strip_prefix("in-").and_then(|n| n.strip_suffix(".pcap")).and_then(|n| n.parse().ok())
        {
            out.push(Input { path: e.path(), in_port: port });
        }
    }
    if out.is_empty() {
        return Err(format!("{s}: a directory without in-N.pcap files"));
    }
    out.sort_by_key(|i| i.in_port);
    Ok(out)
}

/// Parses `FILE[=PORT]` (port 1 when not given).
pub fn parse_input(s: &str) -> Result<Input, String> {
    match s.rsplit_once('=') {
        Some((f, p)) => {
            let in_port = p
                .parse::<u32>()
                .ok()
                .filter(|v| *v >= 1 && *v < 0xff00)
                .ok_or_else(|| format!("input `{s}`: port `{p}` is not in 1..65279"))?;
            Ok(Input { path: f.into(), in_port })
        }
        None => Ok(Input { path: s.into(), in_port: 1 }),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Per output port: (packets, file written).
    pub out: BTreeMap<u32, (u64, PathBuf)>,
    pub to_controller: u64,
    /// Input packets that produced no output at all.
    pub dropped: u64,
    pub datapath: DpStats,
    pub megaflows: usize,
}

impl ReplayReport {
    pub fn to_table(&self) -> String {
        let s = &self.datapath;
        let pct = |x: u64| if s.packets == 0 { 0.0 } else { 100.0 * x as f64 / s.packets as f64 };
        let mut t = format!(
            "packets in: {} ({} bytes)\n  emc hits: {} ({:.1}%), megaflow hits: {} ({:.1}%), upcalls: {} ({:.1}%)\n  megaflows at end: {}\n  dropped (no output): {}, to controller: {}\n",
            self.packets_in,
            self.bytes_in,
            s.emc_hits,
            pct(s.emc_hits),
            s.megaflow_hits,
            pct(s.megaflow_hits),
            s.misses,
            pct(s.misses),
            self.megaflows,
            self.dropped,
            self.to_controller
        );
        for (p, (n, f)) in &self.out {
            t += &format!("  port {p}: {n} packets -> {}\n", f.display());
        }
        t
    }
}

/// Replays `inputs` through `pipeline`, writing `out_dir/port-N.pcap` per output port.
pub fn run(pipeline: &Pipeline, inputs: &[Input], out_dir: &Path, cfg: DpConfig) -> Result<ReplayReport, String> {
    // Read everything first: a bad capture fails the replay before any output exists.
    let mut pkts: Vec<(Duration, usize, u32, Vec<u8>)> = Vec::new();
    for inp in inputs {
        let f = File::open(&inp.path).map_err(|e| format!("cannot read {}: {e}", inp.path.display()))?;
        let mut r =
            PcapReader::new(BufReader::new(f)).map_err(|e| format!("{}: not a pcap file: {e}", inp.path.display()))?;
        let link = r.header().datalink;
        if link != DataLink::ETHERNET {
            return Err(format!(
                "{}: link type {} ({link:?}): kairo replays Ethernet captures (link type 1) only",
                inp.path.display(),
                u32::from(link)
            ));
        }
        let mut i = 0usize;
        while let Some(p) = r.next_packet() {
            i += 1;
            let p = p.map_err(|e| format!("{}: packet {i}: {e}", inp.path.display()))?;
            pkts.push((p.timestamp, pkts.len(), inp.in_port, p.data.into_owned()));
        }
    }
    pkts.sort_by_key(|(ts, seq, _, _)| (*ts, *seq));
    std::fs::create_dir_all(out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut writers: BTreeMap<u32, (u64, PathBuf, PcapWriter<BufWriter<File>>)> = BTreeMap::new();
    let mut dp = Datapath::new(cfg);
    let mut slow = kairo_maintain::shared::Translate(pipeline);
    let mut rep = ReplayReport {
        packets_in: 0,
        bytes_in: 0,
        out: BTreeMap::new(),
        to_controller: 0,
        dropped: 0,
        datapath: DpStats::default(),
        megaflows: 0,
    };
    let mut err: Option<String> = None;
    for (ts, _, port, data) in pkts {
        rep.packets_in += 1;
        rep.bytes_in += data.len() as u64;
        let now = ts.as_millis() as u64;
        // Frames from a capture owe no offloads, nor do their outputs.
        let mut batch = [kairo_datapath::Packet::new(data, port)];
        let mut sent = 0u64;
        dp.process_packets(&mut batch, now, &mut slow, &mut |to, bytes, _| {
            sent += 1;
            let p = match to {
                Sent::Port(p) => p,
                Sent::Controller(_) => {
                    rep.to_controller += 1;
                    return;
                }
                // Taken by the datapath, never handed out.
                Sent::Recirc { .. } => return,
            };
            if err.is_some() {
                return;
            }
            let w = match writers.entry(p) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let path = out_dir.join(format!("port-{p}.pcap"));
                    match ethernet_writer(&path) {
                        Ok(w) => v.insert((0, path, w)),
                        Err(e) => {
                            err = Some(e);
                            return;
                        }
                    }
                }
            };
            w.0 += 1;
            if let Err(e) = w.2.write_packet(&record(ts, bytes)) {
                err = Some(format!("cannot write {}: {e}", w.1.display()));
            }
        });
        if let Some(e) = err.take() {
            return Err(e);
        }
        if sent == 0 {
            rep.dropped += 1;
        }
    }
    for (p, (n, path, w)) in writers {
        let mut inner = w.into_writer();
        std::io::Write::flush(&mut inner).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        rep.out.insert(p, (n, path));
    }
    rep.datapath = dp.stats;
    rep.megaflows = dp.n_flows();
    Ok(rep)
}

/// Writes frames to a pcap file, each with its timestamp.
pub fn write_pcap(path: &Path, frames: &[(Duration, Vec<u8>)]) -> Result<(), String> {
    let err = |e: String| format!("cannot write {}: {e}", path.display());
    let mut w = ethernet_writer(path)?;
    for (ts, data) in frames {
        w.write_packet(&record(*ts, data)).map_err(|e| err(e.to_string()))?;
    }
    std::io::Write::flush(&mut w.into_writer()).map_err(|e| err(e.to_string()))
}

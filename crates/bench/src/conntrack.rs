//! `kairo bench conntrack`: what a new connection costs on the data path.
//!
//! Packets built in memory go through the whole datapath (parse, EMC,
//! megaflow lookup, actions, the connection tracker, recirculation) with a
//! stateful firewall pipeline (`ct(table=1)`, then `ct(commit)` for new
//! connections from port 1 and pass for established ones), the slow path
//! only for the first packets (the megaflows match ct_state, not the
//! 5-tuple). Measured: TCP connections set up per second (SYN, SYN+ACK,
//! ACK, each a new 5-tuple), new UDP connections per second (one committed
//! datagram each), packets of established connections per second, and the
//! resident memory each held connection costs. Invariant: every scenario
//! checks the connections it made are in the table (a benchmark that
//! measures nothing fails instead).

use std::time::Instant;

use kairo_datapath::execute::Sent;
use kairo_datapath::{Datapath, DpConfig};
use kairo_flow::{parse_key, Field};
use kairo_xlate::Pipeline;
use serde::Serialize;

use crate::{table, Machine};

/// The firewall the benchmark runs (zone 1; port 1 inside, port 2 outside).
pub const FIREWALL: &str = "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)
table=1,priority=100,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=1),output:2
table=1,priority=100,ip,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=100,ip,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=0,actions=drop
";

pub struct CtOpts {
    /// Connections per scenario.
    pub conns: usize,
    pub seed: u64,
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CtRow {
    pub scenario: String,
    pub conns: usize,
    pub packets: usize,
    pub secs: f64,
    pub conns_per_sec: f64,
    pub packets_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CtReport {
    pub machine: Machine,
    pub rows: Vec<CtRow>,
    /// Resident bytes per connection held (table slot, both keys, state).
    pub bytes_per_conn: f64,
    pub bytes_per_conn_at: usize,
}

/// A TCP frame `src:sport -> dst:dport` on `in_port` with these header fields.
#[allow(clippy::too_many_arguments)]
fn tcp(in_port: u32, src: u32, sport: u16, dst: u32, dport: u16, flags: u16, seq: u32, ack: u32) -> Vec<u8> {
    let k = parse_key(&format!("in_port={in_port},tcp,nw_ttl=64"))
        .expect("a TCP key")
        .with(Field::IpSrc, u64::from(src))
        .with(Field::IpDst, u64::from(dst))
        .with(Field::TpSrc, u64::from(sport))
        .with(Field::TpDst, u64::from(dport))
        .with(Field::TcpFlags, u64::from(flags));
    crate::connections::frame_with_seq(&k, &[], seq, ack)
}

fn udp(in_port: u32, src: u32, sport: u16, dst: u32, dport: u16) -> Vec<u8> {
    let k = parse_key(&format!("in_port={in_port},udp,nw_ttl=64"))
        .expect("a UDP key")
        .with(Field::IpSrc, u64::from(src))
        .with(Field::IpDst, u64::from(dst))
        .with(Field::TpSrc, u64::from(sport))
        .with(Field::TpDst, u64::from(dport));
    kairo_wire::emit::frame(&k, &[0; 18])
}

/// Client `i`'s address and port (distinct 5-tuples for up to 2^32 clients).
fn client(i: usize) -> (u32, u16) {
    (0x0a00_0000 | (i as u32 >> 14), 1024 + (i as u16 & 0x3fff))
}

const SERVER: u32 = 0xc0a8_0001;
const BATCH: usize = 32;

/// Runs packets (bytes, port) through the datapath in batches; how many
/// left it.
fn run(dp: &mut Datapath, slow: &mut kairo_maintain::shared::Translate<'_>, pkts: Vec<(Vec<u8>, u32)>) -> usize {
    let mut out = 0usize;
    let mut batch: Vec<kairo_datapath::Packet> = Vec::with_capacity(BATCH);
    let mut it = pkts.into_iter().peekable();
    while it.peek().is_some() {
        batch.clear();
        batch.extend(it.by_ref().take(BATCH).map(|(b, p)| kairo_datapath::Packet::new(b, p)));
        dp.process_packets(&mut batch, 1, slow, &mut |to, _, _| out += usize::from(matches!(to, Sent::Port(_))));
    }
    out
}

fn row(scenario: &str, conns: usize, packets: usize, secs: f64) -> CtRow {
    CtRow {
        scenario: scenario.to_string(),
        conns,
        packets,
        secs,
        conns_per_sec: conns as f64 / secs,
        packets_per_sec: packets as f64 / secs,
    }
}

/// Runs the scenarios.
pub fn run_all(opts: &CtOpts) -> Result<CtReport, String> {
    let ff = kairo_ofproto::parse_flow_file(FIREWALL).map_err(|e| e.to_string())?;
    let p = Pipeline::from_parts(ff, vec![]).map_err(|e| e.to_string())?;
    let n = opts.conns.max(1);
    let pb = crate::progress_bar(opts.progress, 4, "conntrack benchmarks".into());
    let mut rows = Vec::new();
    let offset = (opts.seed as usize) << 20;

    // TCP handshakes, in waves of a batch: SYNs, then their SYN+ACKs, then ACKs.
    let mut dp = Datapath::new(DpConfig::default());
    let mut slow = kairo_maintain::shared::Translate(&p);
    let waves: Vec<Vec<(Vec<u8>, u32)>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .flat_map(|w| {
            let syn = w.iter().map(|&i| {
                let (a, sp) = client(offset + i);
                (tcp(1, a, sp, SERVER, 80, 0x02, 1000, 0), 1)
            });
            let synack = w.iter().map(|&i| {
                let (a, sp) = client(offset + i);
                (tcp(2, SERVER, 80, a, sp, 0x12, 5000, 1001), 2)
            });
            let ack = w.iter().map(|&i| {
                let (a, sp) = client(offset + i);
                (tcp(1, a, sp, SERVER, 80, 0x10, 1001, 5001), 1)
            });
            [syn.collect::<Vec<_>>(), synack.collect(), ack.collect()]
        })
        .collect();
    let packets: usize = waves.iter().map(Vec::len).sum();
    let before = crate::resident_bytes().unwrap_or(0);
    let t = Instant::now();
    let mut sent = 0;
    for w in waves {
        sent += run(&mut dp, &mut slow, w);
    }
    let secs = t.elapsed().as_secs_f64();
    let after = crate::resident_bytes().unwrap_or(0);
    let est = dp.ct().dump(Some(1), 1).iter().filter(|e| e.tcp.is_some_and(|(a, b)| a == b)).count();
    if est != n || sent != packets {
        return Err(format!("TCP handshakes: {est} of {n} connections established, {sent} of {packets} packets sent"));
    }
    rows.push(row("TCP connections set up (SYN, SYN+ACK, ACK)", n, packets, secs));
    let bytes_per_conn = after.saturating_sub(before) as f64 / n as f64;
    pb.inc(1);

    // Packets of those established connections, both ways.
    let data: Vec<(Vec<u8>, u32)> = (0..n)
        .flat_map(|i| {
            let (a, sp) = client(offset + i);
            [(tcp(1, a, sp, SERVER, 80, 0x10, 1001, 5001), 1), (tcp(2, SERVER, 80, a, sp, 0x10, 5001, 1001), 2)]
        })
        .collect();
    let m = data.len();
    let t = Instant::now();
    let sent = run(&mut dp, &mut slow, data);
    let secs = t.elapsed().as_secs_f64();
    if sent != m {
        return Err(format!("established packets: {sent} of {m} forwarded"));
    }
    rows.push(row("packets of established TCP connections", n, m, secs));
    pb.inc(1);

    // New UDP connections: one committed datagram each.
    let mut dp = Datapath::new(DpConfig::default());
    let first: Vec<(Vec<u8>, u32)> = (0..n)
        .map(|i| {
            let (a, sp) = client(offset + i);
            (udp(1, a, sp, SERVER, 53), 1)
        })
        .collect();
    let t = Instant::now();
    let sent = run(&mut dp, &mut slow, first);
    let secs = t.elapsed().as_secs_f64();
    if dp.ct().len() != n || sent != n {
        return Err(format!("UDP: {} of {n} connections committed, {sent} datagrams sent", dp.ct().len()));
    }
    rows.push(row("UDP connections committed (first datagram)", n, n, secs));
    pb.inc(1);

    // Expiring them all (the sweep the forwarding thread runs in slices).
    let t = Instant::now();
    let mut gone = 0;
    while gone < n {
        let k = dp.ct().expire(u64::MAX / 2, 10_000);
        if k == 0 {
            break;
        }
        gone += k;
    }
    let secs = t.elapsed().as_secs_f64();
    if gone != n {
        return Err(format!("expiry: {gone} of {n} connections removed"));
    }
    rows.push(row("connections expired (10K per slice)", n, 0, secs));
    pb.finish_and_clear();
    Ok(CtReport { machine: Machine::detect(), rows, bytes_per_conn, bytes_per_conn_at: n })
}

impl CtReport {
    pub fn to_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.scenario.clone(),
                    r.conns.to_string(),
                    format!("{:.0}", r.conns_per_sec),
                    if r.packets == 0 { "-".into() } else { format!("{:.0}", r.packets_per_sec) },
                    format!("{:.3}", r.secs),
                ]
            })
            .collect();
        let mut s = format!("machine: {}\n\n", self.machine);
        s.push_str(&table(&["scenario", "connections", "connections/s", "packets/s", "seconds"], &rows));
        s.push_str(&format!(
            "\nresident memory per held connection: {:.0} bytes (measured holding {} TCP connections)\n",
            self.bytes_per_conn, self.bytes_per_conn_at
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario runs and checks what it made (a few thousand connections).
    #[test]
    fn scenarios_run_and_check_their_connections() {
        let r = run_all(&CtOpts { conns: 3000, seed: 2, progress: false }).expect("scenarios");
        assert_eq!(r.rows.len(), 4);
        assert!(r.rows.iter().all(|row| row.conns == 3000 && row.conns_per_sec > 0.0), "{:?}", r.rows);
        assert!(r.to_table().contains("TCP connections set up"));
    }

    /// IPv4 fragments through the datapath's firewall: nothing leaves until
    /// the datagram is whole, then every fragment does, and the reply is
    /// established.
    #[test]
    fn fragments_leave_together_once_whole() {
        let ff = kairo_ofproto::parse_flow_file(FIREWALL).unwrap();
        let p = Pipeline::from_parts(ff, vec![]).unwrap();
        let mut dp = Datapath::new(DpConfig::default());
        let mut slow = kairo_maintain::shared::Translate(&p);
        let whole = udp(1, 0x0a00_0001, 5000, SERVER, 53);
        let (eth, ip, payload) = (&whole[..14], &whole[14..34], &whole[34..]);
        let frag = |part: &[u8], off: usize, more: bool| {
            let mut h = ip.to_vec();
            h[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&7u16.to_be_bytes());
            h[6..8].copy_from_slice(&((off / 8) as u16 | if more { 0x2000 } else { 0 }).to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = kairo_wire::checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            [eth, &h[..], part].concat()
        };
        let first = frag(&payload[..16], 0, true);
        let last = frag(&payload[16..], 16, false);
        assert_eq!(run(&mut dp, &mut slow, vec![(first, 1)]), 0, "a first fragment alone waits");
        assert_eq!(run(&mut dp, &mut slow, vec![(last, 1)]), 2, "then both leave");
        assert_eq!(dp.ct().len(), 1);
        let reply = udp(2, SERVER, 53, 0x0a00_0001, 5000);
        assert_eq!(run(&mut dp, &mut slow, vec![(reply, 2)]), 1, "the reply is established");
    }
}

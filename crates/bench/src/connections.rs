//! Opening connections through a datapath, for workloads whose pipelines
//! track connections (`ct`): a connection's first packet, the answer to
//! every copy of it the switch sent out (from the port it left by, its
//! addresses and ports swapped, as the peer answers), then the
//! originator's next packet. For TCP that is the handshake (SYN, SYN+ACK,
//! ACK, with sequence numbers the tracker's windows accept); for UDP a
//! datagram, its answer and a second datagram.
//!
//! Invariant: every packet is a real frame through the whole datapath and
//! its connection tracker, so the cache holds what such traffic makes (the
//! passes of new, reply and established packets) and nothing is modelled;
//! the count returned is of packets the datapath was given.

use kairo_datapath::execute::Sent;
use kairo_datapath::{Datapath, SlowPath};
use kairo_flow::{Field, FlowKey};

/// The originator's and the answerer's initial sequence numbers.
const CLIENT_ISN: u32 = 1_000;
const SERVER_ISN: u32 = 5_000;

/// TCP flags.
const SYN: u64 = 0x002;
const ACK: u64 = 0x010;

/// The frame of a packet with key `k` and `payload` (TCP with these
/// sequence numbers and a full window; other protocols as the key says).
pub(crate) fn frame_with_seq(k: &FlowKey, payload: &[u8], seq: u32, ack: u32) -> Vec<u8> {
    let mut f = kairo_wire::emit::frame(k, payload);
    let lay = kairo_wire::parse(&f, k.get(Field::InPort) as u32).1;
    kairo_wire::rewrite::set_tcp_seq(&mut f, &lay, seq, ack, 65_535);
    f
}

/// A frame for `k` (TCP with these sequence numbers), as it arrives on
/// `k`'s in_port.
fn frame(k: &FlowKey, seq: u32, ack: u32) -> Vec<u8> {
    frame_with_seq(k, &[0; 16], seq, ack)
}

/// Runs one frame in on `in_port` through `dp`; the frames it sent out of ports.
fn send<S: SlowPath + ?Sized>(
    dp: &mut Datapath,
    slow: &mut S,
    in_port: u64,
    f: Vec<u8>,
    now: u64,
) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pkts = vec![kairo_datapath::Packet::new(f, in_port as u32)];
    dp.process_packets(&mut pkts, now, slow, &mut |sent, bytes, _| {
        if let Sent::Port(p) = sent {
            out.push((p, bytes.to_vec()));
        }
    });
    out
}

/// The answer to a frame that left by `port`: from that port, Ethernet and
/// IP addresses and transport ports swapped, with `flags`.
fn answer(port: u32, bytes: &[u8], flags: u64) -> FlowKey {
    let k = kairo_wire::parse(bytes, port).0;
    let mut a = k;
    for (x, y) in [(Field::EthSrc, Field::EthDst), (Field::IpSrc, Field::IpDst), (Field::TpSrc, Field::TpDst)] {
        a.set(x, k.get(y));
        a.set(y, k.get(x));
    }
    a.set(Field::IpTtl, 64);
    if k.get(Field::IpProto) == 6 {
        a.set(Field::TcpFlags, flags);
    }
    a
}

/// A connection's first packet (SYN for TCP) as a frame.
pub(crate) fn first_frame(first: &FlowKey) -> Vec<u8> {
    let tcp = first.get(Field::IpProto) == 6;
    let syn = first.with(Field::TcpFlags, if tcp { SYN } else { 0 });
    frame(&syn, CLIENT_ISN, 0)
}

/// The peer's answer (SYN+ACK for TCP) to a copy of the first packet that
/// left by `port` as `bytes`: its key and frame, to come in on `port`.
pub(crate) fn answer_frame(port: u32, bytes: &[u8]) -> (FlowKey, Vec<u8>) {
    let a = answer(port, bytes, SYN | ACK);
    let f = frame(&a, SERVER_ISN, CLIENT_ISN.wrapping_add(1));
    (a, f)
}

/// The originator's next packet (the handshake's ACK for TCP) as a frame.
pub(crate) fn next_frame(first: &FlowKey) -> Vec<u8> {
    let tcp = first.get(Field::IpProto) == 6;
    let next = first.with(Field::TcpFlags, if tcp { ACK } else { 0 });
    frame(&next, CLIENT_ISN.wrapping_add(1), SERVER_ISN.wrapping_add(1))
}

/// Opens the connection whose first packet is `first` (IPv4 TCP or UDP,
/// untracked) through `dp`; how many packets that took.
pub fn open<S: SlowPath + ?Sized>(dp: &mut Datapath, slow: &mut S, first: &FlowKey, now: u64) -> usize {
    let in_port = first.get(Field::InPort);
    let sent = send(dp, slow, in_port, first_frame(first), now);
    let mut packets = 1;
    for (port, bytes) in &sent {
        let (a, f) = answer_frame(*port, bytes);
        send(dp, slow, a.get(Field::InPort), f, now);
        packets += 1;
    }
    send(dp, slow, in_port, next_frame(first), now);
    packets + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairo_maintain::shared::SharedControl;
    use kairo_maintain::{Control, EngineKind};

    /// A firewall in one zone: new connections from port 1 are committed and
    /// go to port 2; packets of established ones pass both ways.
    const FIREWALL: &str = "table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=7)
table=1,priority=100,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=7),output:2
table=1,priority=100,ip,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=100,ip,in_port=2,ct_state=+trk+est+rpl,actions=output:1
table=1,priority=0,actions=drop
";

    #[test]
    fn a_tcp_and_a_udp_connection_open_through_a_firewall() {
        let p = kairo_xlate::Pipeline::from_parts(
            kairo_ofproto::parse_flow_file(FIREWALL).expect("flows"),
            kairo_ofproto::parse_group_file("").expect("groups"),
        )
        .expect("pipeline");
        let mut dp = Datapath::new(kairo_datapath::DpConfig::default());
        let mut sc = SharedControl::new(Control::new(p, EngineKind::Incremental));
        for spec in [
            "in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=4000,tp_dst=80,nw_ttl=64",
            "in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=4000,tp_dst=53,nw_ttl=64",
        ] {
            let k = kairo_flow::parse_key(spec).expect("key");
            assert_eq!(open(&mut dp, &mut sc, &k, 1), 3, "{spec}");
        }
        // Both connections are established in the tracker: the answers came
        // back (as replies) and were let through the est+rpl rule.
        let dump: Vec<String> = dp.ct().dump(None, 1).iter().map(|e| e.to_string()).collect();
        assert_eq!(dump.len(), 2, "{dump:?}");
        assert!(dump.iter().any(|e| e.contains("ESTABLISHED")), "{dump:?}");
        let est_rpl = dp.megaflows().filter(|m| kairo_flow::format_megaflow(&m.rep, &m.mask).contains("+rpl")).count();
        assert!(est_rpl >= 1, "a reply pass was cached");
    }
}

use super::*;
use kairo_flow::parse::parse_key;
use kairo_odp::nat::{NatAddrs, NatKind};
use proptest::prelude::*;
use tcp::{ACK, FIN, RST, SYN};

const A: &str = "10.0.0.1";
const B: &str = "10.0.0.2";

/// A TCP frame from `src:sport` to `dst:dport` with the given header
/// fields and `len` bytes of payload, checksums right.
#[allow(clippy::too_many_arguments)]
fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u16, seq: u32, ack: u32, win: u16, len: usize) -> Vec<u8> {
    let k = parse_key(&format!("in_port=1,tcp,nw_src={src},nw_dst={dst},tp_src={sport},tp_dst={dport},nw_ttl=64"))
        .expect("key")
        .with(Field::TcpFlags, u64::from(flags));
    let mut f = kairo_wire::emit::frame(&k, &vec![0u8; len]);
    let lay = kairo_wire::parse(&f, 1).1;
    kairo_wire::rewrite::set_tcp_seq(&mut f, &lay, seq, ack, win);
    f
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    let k = parse_key(&format!("in_port=1,udp,nw_src={src},nw_dst={dst},udp_src={sport},udp_dst={dport},nw_ttl=64"))
        .expect("key");
    kairo_wire::emit::frame(&k, &[1, 2, 3, 4])
}

fn icmp(src: &str, dst: &str, ty: u8, id: u16) -> Vec<u8> {
    let k = parse_key(&format!("in_port=1,icmp,nw_src={src},nw_dst={dst},icmp_type={ty},icmp_code=0,nw_ttl=64"))
        .expect("key");
    let mut f = kairo_wire::emit::frame(&k, &[0u8; 8]);
    let l4 = 14 + 20;
    f[l4 + 4..l4 + 6].copy_from_slice(&id.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let c = kairo_wire::checksum(&f[l4..]);
    f[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
    f
}

fn commit(zone: u16) -> Request<'static> {
    Request { zone, commit: true, ..Request::default() }
}

fn track(zone: u16) -> Request<'static> {
    Request { zone, ..Request::default() }
}

/// One `ct` on a fresh packet: its ct_state.
fn run(ct: &mut Conntrack, pkt: &mut [u8], req: &Request<'_>, now: u64) -> u8 {
    let mut m = CtMeta::default();
    ct.execute(pkt, 1, &mut m, req, now);
    m.state
}

#[test]
fn tcp_handshake_data_and_close_go_through_the_states() {
    let mut ct = Conntrack::new();
    let c = commit(0);
    // (packet, expected ct_state), in order: handshake, data, close.
    type Step = (Vec<u8>, u8, (tcp::TcpState, tcp::TcpState), Timeout);
    let steps: Vec<Step> = vec![
        (
            tcp(A, 1000, B, 80, SYN, 100, 0, 65535, 0),
            TRK | NEW,
            (tcp::TcpState::SynSent, tcp::TcpState::Closed),
            Timeout::TcpFirst,
        ),
        (
            tcp(B, 80, A, 1000, SYN | ACK, 500, 101, 65535, 0),
            TRK | EST | RPL,
            (tcp::TcpState::Established, tcp::TcpState::SynSent),
            Timeout::TcpOpening,
        ),
        (
            tcp(A, 1000, B, 80, ACK, 101, 501, 65535, 0),
            TRK | EST,
            (tcp::TcpState::Established, tcp::TcpState::Established),
            Timeout::TcpEstablished,
        ),
        (
            tcp(A, 1000, B, 80, ACK, 101, 501, 65535, 100),
            TRK | EST,
            (tcp::TcpState::Established, tcp::TcpState::Established),
            Timeout::TcpEstablished,
        ),
        (
            tcp(B, 80, A, 1000, ACK, 501, 201, 65535, 0),
            TRK | EST | RPL,
            (tcp::TcpState::Established, tcp::TcpState::Established),
            Timeout::TcpEstablished,
        ),
        (
            tcp(A, 1000, B, 80, FIN | ACK, 201, 501, 65535, 0),
            TRK | EST,
            (tcp::TcpState::Closing, tcp::TcpState::Established),
            Timeout::TcpClosing,
        ),
        (
            tcp(B, 80, A, 1000, FIN | ACK, 501, 202, 65535, 0),
            TRK | EST | RPL,
            (tcp::TcpState::FinWait2, tcp::TcpState::Closing),
            Timeout::TcpFinWait,
        ),
        (
            tcp(A, 1000, B, 80, ACK, 202, 502, 65535, 0),
            TRK | EST,
            (tcp::TcpState::FinWait2, tcp::TcpState::FinWait2),
            Timeout::TcpClosed,
        ),
    ];
    for (i, (mut p, want, states, timeout)) in steps.into_iter().enumerate() {
        assert_eq!(run(&mut ct, &mut p, &c, 1000), want, "step {i}");
        let e = &ct.dump(None, 1000)[0];
        assert_eq!(e.tcp, Some(states), "step {i}");
        assert_eq!(e.timeout, timeout, "step {i}");
    }
    assert_eq!(ct.len(), 1);
}

#[test]
fn tcp_segments_out_of_window_or_with_bad_flags_are_invalid() {
    let mut ct = Conntrack::new();
    let c = commit(0);
    for mut p in [
        tcp(A, 1000, B, 80, SYN, 100, 0, 1000, 0),
        tcp(B, 80, A, 1000, SYN | ACK, 500, 101, 1000, 0),
        tcp(A, 1000, B, 80, ACK, 101, 501, 1000, 0),
    ] {
        run(&mut ct, &mut p, &c, 0);
    }
    // Far beyond what the receiver allowed.
    assert_eq!(run(&mut ct, &mut tcp(A, 1000, B, 80, ACK, 101 + 1_000_000, 501, 1000, 10), &c, 0), TRK | INV);
    // Acknowledging data never sent.
    assert_eq!(run(&mut ct, &mut tcp(A, 1000, B, 80, ACK, 101, 501 + 2_000_000, 1000, 0), &c, 0), TRK | INV);
    // SYN with FIN; no flags at all.
    assert_eq!(run(&mut ct, &mut tcp(A, 1000, B, 80, SYN | FIN, 101, 0, 1000, 0), &c, 0), TRK | INV);
    assert_eq!(run(&mut ct, &mut tcp(A, 1000, B, 80, 0, 101, 0, 1000, 0), &c, 0), TRK | INV);
    // A reset with the wrong sequence number is invalid; with the right one it closes.
    assert_eq!(run(&mut ct, &mut tcp(B, 80, A, 1000, RST | ACK, 9999, 101, 0, 0), &c, 0), TRK | INV);
    assert_eq!(run(&mut ct, &mut tcp(B, 80, A, 1000, RST | ACK, 501, 101, 0, 0), &c, 0), TRK | EST | RPL);
    assert_eq!(ct.dump(None, 0)[0].timeout, Timeout::TcpClosed);
    // A SYN+ACK cannot open a connection; neither can an uncommitted SYN be remembered.
    let mut fresh = Conntrack::new();
    assert_eq!(run(&mut fresh, &mut tcp(A, 1, B, 2, SYN | ACK, 1, 1, 100, 0), &c, 0), TRK | INV);
    assert_eq!(run(&mut fresh, &mut tcp(A, 1, B, 2, SYN, 1, 0, 100, 0), &track(0), 0), TRK | NEW);
    assert!(fresh.is_empty());
}

#[test]
fn a_syn_after_both_ends_closed_opens_a_new_connection() {
    let mut ct = Conntrack::new();
    let c = commit(0);
    for mut p in [
        tcp(A, 1000, B, 80, SYN, 100, 0, 1000, 0),
        tcp(B, 80, A, 1000, SYN | ACK, 500, 101, 1000, 0),
        tcp(A, 1000, B, 80, ACK, 101, 501, 1000, 0),
        tcp(A, 1000, B, 80, FIN | ACK, 101, 501, 1000, 0),
        tcp(B, 80, A, 1000, FIN | ACK, 501, 102, 1000, 0),
        tcp(A, 1000, B, 80, ACK, 102, 502, 1000, 0),
    ] {
        run(&mut ct, &mut p, &c, 0);
    }
    assert_eq!(run(&mut ct, &mut tcp(A, 1000, B, 80, SYN, 7000, 0, 1000, 0), &c, 0), TRK | NEW);
    let e = &ct.dump(None, 0)[0];
    assert_eq!(e.tcp, Some((tcp::TcpState::SynSent, tcp::TcpState::Closed)));
    assert_eq!(ct.len(), 1);
}

#[test]
fn timeouts_follow_the_injected_clock() {
    let mut ct = Conntrack::new();
    let c = commit(0);
    run(&mut ct, &mut udp(A, 5, B, 53), &c, 0);
    // One packet: udp_first (60 s).
    assert_eq!(ct.expire(59_999, 100), 0);
    assert_eq!(ct.expire(60_000, 100), 1);
    assert!(ct.is_empty());
    run(&mut ct, &mut udp(A, 5, B, 53), &c, 0);
    assert_eq!(run(&mut ct, &mut udp(B, 53, A, 5), &c, 10_000), TRK | EST | RPL);
    // Both ways: udp_multiple (30 s) from the reply.
    assert_eq!(ct.expire(39_999, 100), 0);
    // Past its time, the connection is gone for lookups even before a sweep.
    assert_eq!(run(&mut ct, &mut udp(A, 5, B, 53), &track(0), 40_000), TRK | NEW);
    assert_eq!(ct.stats().expired, 2);
    // TCP established: a day.
    let mut p = [
        tcp(A, 1, B, 2, SYN, 1, 0, 100, 0),
        tcp(B, 2, A, 1, SYN | ACK, 9, 2, 100, 0),
        tcp(A, 1, B, 2, ACK, 2, 10, 100, 0),
    ];
    for f in p.iter_mut() {
        run(&mut ct, f, &c, 0);
    }
    assert_eq!(ct.expire(86_399_999, 100), 0);
    assert_eq!(ct.expire(86_400_000, 100), 1);
}

#[test]
fn expiry_is_bounded_per_call() {
    let mut ct = Conntrack::new();
    for port in 0..100u16 {
        run(&mut ct, &mut udp(A, 1000 + port, B, 53), &commit(0), 0);
    }
    assert_eq!(ct.expire(60_000, 30), 30);
    assert_eq!(ct.len(), 70);
    assert_eq!(ct.expire(60_000, 1000), 70);
}

#[test]
fn udp_states_follow_open_vswitch() {
    let mut ct = Conntrack::new();
    let c = commit(0);
    assert_eq!(run(&mut ct, &mut udp(A, 5, B, 53), &c, 0), TRK | NEW);
    // A second packet one way is still new, then established.
    assert_eq!(run(&mut ct, &mut udp(A, 5, B, 53), &c, 0), TRK | NEW);
    assert_eq!(run(&mut ct, &mut udp(A, 5, B, 53), &c, 0), TRK | EST);
    assert_eq!(run(&mut ct, &mut udp(B, 53, A, 5), &c, 0), TRK | EST | RPL);
}

#[test]
fn icmp_echo_and_an_error_about_a_connection_are_tracked() {
    let mut ct = Conntrack::new();
    let c = commit(0);
    assert_eq!(run(&mut ct, &mut icmp(A, B, 8, 77), &c, 0), TRK | NEW);
    assert_eq!(run(&mut ct, &mut icmp(B, A, 0, 77), &c, 0), TRK | EST | RPL);
    // A reply with another identifier, or a lone reply, belongs to nothing.
    assert_eq!(run(&mut ct, &mut icmp(B, A, 0, 78), &c, 0), TRK | INV);
    // A UDP connection, then a port unreachable from B quoting its packet.
    run(&mut ct, &mut udp(A, 5, B, 53), &c, 0);
    let quoted = udp(A, 5, B, 53);
    let k = parse_key(&format!("in_port=1,icmp,nw_src={B},nw_dst={A},icmp_type=3,icmp_code=3,nw_ttl=64")).unwrap();
    let mut err = kairo_wire::emit::frame(&k, &quoted[14..14 + 28]);
    let l4 = 34;
    err[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let cs = kairo_wire::checksum(&err[l4..]);
    err[l4 + 2..l4 + 4].copy_from_slice(&cs.to_be_bytes());
    assert_eq!(run(&mut ct, &mut err, &c, 0), TRK | REL | RPL);
    // An error about nothing known is invalid.
    let other = udp(A, 6, B, 53);
    let mut stray = kairo_wire::emit::frame(&k, &other[14..14 + 28]);
    assert_eq!(run(&mut ct, &mut stray, &c, 0), TRK | INV);
}

#[test]
fn zones_are_separate_tables() {
    let mut ct = Conntrack::new();
    run(&mut ct, &mut udp(A, 5, B, 53), &commit(1), 0);
    assert_eq!(run(&mut ct, &mut udp(B, 53, A, 5), &track(2), 0), TRK | NEW);
    assert_eq!(run(&mut ct, &mut udp(B, 53, A, 5), &track(1), 0), TRK | EST | RPL);
    run(&mut ct, &mut udp(A, 5, B, 53), &commit(2), 0);
    assert_eq!((ct.zone_len(1), ct.zone_len(2)), (1, 1));
    assert_eq!(ct.flush(Some(1)), 1);
    assert_eq!(ct.dump(None, 0).len(), 1);
    assert_eq!(ct.dump(None, 0)[0].orig.zone, 2);
}

#[test]
fn limits_hold_and_are_counted() {
    let mut ct = Conntrack::new();
    ct.set_max_conns(3);
    ct.set_zone_limit(7, Some(1));
    assert_eq!(run(&mut ct, &mut udp(A, 1, B, 53), &commit(7), 0), TRK | NEW);
    // The zone is full: new, not committed.
    assert_eq!(run(&mut ct, &mut udp(A, 2, B, 53), &commit(7), 0), TRK | NEW);
    assert_eq!(ct.zone_len(7), 1);
    for p in 3..10 {
        run(&mut ct, &mut udp(A, p, B, 53), &commit(0), 0);
    }
    assert_eq!(ct.len(), 3);
    let s = ct.stats();
    assert_eq!((s.zone_full, s.full, s.committed), (1, 5, 3));
}

#[test]
fn mark_and_label_are_set_on_the_connection() {
    let mut ct = Conntrack::new();
    let req = Request { mark: Some((0x5, 0xf)), label: Some((1 << 100, 1 << 100)), ..commit(3) };
    let mut m = CtMeta::default();
    ct.execute(&mut udp(A, 5, B, 53), 1, &mut m, &req, 0);
    assert_eq!((m.mark, m.label, m.zone), (5, 1 << 100, 3));
    let mut r = CtMeta::default();
    ct.execute(&mut udp(B, 53, A, 5), 1, &mut r, &track(3), 0);
    assert_eq!((r.state, r.mark, r.label), (TRK | EST | RPL, 5, 1 << 100));
    let mut k = FlowKey::ZERO;
    r.write_key(&mut k);
    assert_eq!(k.get(Field::CtNwSrc), 0x0a00_0001);
    assert_eq!((k.get(Field::CtTpSrc), k.get(Field::CtTpDst), k.get(Field::CtNwProto)), (5, 53, 17));
    assert_eq!(k.get(Field::CtMark), 5);
}

fn dnat(lo: &str, hi: &str, port: u16) -> Nat {
    let (a, b) = (kairo_flow::parse::parse_ipv4(lo).unwrap() as u32, kairo_flow::parse::parse_ipv4(hi).unwrap() as u32);
    Nat { kind: Some(NatKind::Dst), addrs: Some(NatAddrs::V4(a, b)), ports: Some((port, port)), ..Nat::default() }
}

#[test]
fn dnat_rewrites_and_replies_come_back_untranslated() {
    let mut ct = Conntrack::new();
    let nat = dnat("10.1.0.5", "10.1.0.5", 8080);
    let req = Request { nat: Some(&nat), ..commit(0) };
    let mut p = tcp(A, 1000, "10.96.0.1", 80, SYN, 100, 0, 1000, 0);
    let mut m = CtMeta::default();
    ct.execute(&mut p, 1, &mut m, &req, 0);
    assert_eq!(m.state, TRK | NEW | DNAT);
    let (k, _) = kairo_wire::parse(&p, 1);
    assert_eq!((kairo_flow::parse::format_ipv4(k.get(Field::IpDst)), k.get(Field::TpDst)), ("10.1.0.5".into(), 8080));
    assert!(checksums_ok(&p));
    // The endpoint answers from its own address; the reply leaves as from the VIP.
    let bare = Nat::default();
    let mut r = tcp("10.1.0.5", 8080, A, 1000, SYN | ACK, 500, 101, 1000, 0);
    let mut rm = CtMeta::default();
    ct.execute(&mut r, 2, &mut rm, &Request { nat: Some(&bare), ..track(0) }, 0);
    assert_eq!(rm.state, TRK | EST | RPL | SNAT);
    let (k, _) = kairo_wire::parse(&r, 2);
    assert_eq!((kairo_flow::parse::format_ipv4(k.get(Field::IpSrc)), k.get(Field::TpSrc)), ("10.96.0.1".into(), 80));
    assert!(checksums_ok(&r));
    // The original tuple is the client's view.
    assert_eq!(rm.orig.map(|o| (o.dst as u32, o.dport)), Some((0x0a60_0001, 80)));
    // A second ct on the rewritten packet finds the connection again (no re-translation, no new state).
    ct.execute(&mut p, 1, &mut m, &Request { nat: Some(&bare), ..commit(0) }, 0);
    assert_eq!(m.state, TRK | NEW | DNAT);
    assert_eq!(ct.len(), 1);
}

/// IPv4 header and TCP/UDP checksums of a frame are right.
fn checksums_ok(f: &[u8]) -> bool {
    let ip = &f[14..34];
    if kairo_wire::checksum(ip) != 0 {
        return false;
    }
    let l4 = &f[34..];
    let proto = f[23];
    let mut acc = kairo_wire::sum(0, &f[26..34]);
    acc = acc.wrapping_add(u32::from(proto)).wrapping_add(l4.len() as u32);
    acc = kairo_wire::sum(acc, l4);
    kairo_wire::fold(acc) == 0xffff
}

#[test]
fn snat_exhaustion_is_counted_and_refused() {
    let mut ct = Conntrack::new();
    let ip = kairo_flow::parse::parse_ipv4("192.0.2.1").unwrap() as u32;
    let nat = Nat {
        kind: Some(NatKind::Src),
        addrs: Some(NatAddrs::V4(ip, ip)),
        ports: Some((5000, 5001)),
        ..Nat::default()
    };
    let req = Request { nat: Some(&nat), ..commit(0) };
    let mut states = Vec::new();
    for p in 0..3 {
        states.push(run(&mut ct, &mut udp(A, 100 + p, B, 53), &req, 0));
    }
    assert_eq!(states, vec![TRK | NEW | SNAT, TRK | NEW | SNAT, TRK | INV]);
    assert_eq!(ct.stats().nat_exhausted, 1);
}

#[test]
fn force_replaces_a_connection_the_packet_answers() {
    let mut ct = Conntrack::new();
    run(&mut ct, &mut udp(A, 5, B, 53), &commit(0), 0);
    let forced = Request { force: true, ..commit(0) };
    assert_eq!(run(&mut ct, &mut udp(B, 53, A, 5), &forced, 0), TRK | NEW);
    let d = ct.dump(None, 0);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].orig.sport, 53);
}

#[test]
fn malformed_and_non_ip_packets_are_invalid_never_a_panic() {
    let mut ct = Conntrack::new();
    let mut short = udp(A, 5, B, 53);
    short.truncate(30);
    assert_eq!(run(&mut ct, &mut short, &commit(0), 0), TRK | INV);
    let arp = parse_key("in_port=1,arp,arp_op=1").unwrap();
    assert_eq!(run(&mut ct, &mut kairo_wire::emit::frame(&arp, &[]), &commit(0), 0), TRK | INV);
    let mut empty: Vec<u8> = Vec::new();
    assert_eq!(run(&mut ct, &mut empty, &commit(0), 0), TRK | INV);
    assert!(ct.is_empty());
}

#[test]
fn dnat_over_a_range_spreads_connections_by_their_ports() {
    // Linux picks even ephemeral ports for connect(): the choice must still spread.
    let nat = dnat("10.1.0.2", "10.1.0.3", 8080);
    let mut seen = std::collections::BTreeMap::new();
    for port in (32768..32800).step_by(2) {
        let mut ct = Conntrack::new();
        let mut p = tcp(A, port, "10.96.0.1", 80, SYN, 1, 0, 1000, 0);
        ct.execute(&mut p, 1, &mut CtMeta::default(), &Request { nat: Some(&nat), ..commit(0) }, 0);
        let (k, _) = kairo_wire::parse(&p, 1);
        *seen.entry(k.get(Field::IpDst)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 4), "{seen:?}");
}

proptest! {
    /// Whatever bytes arrive, the tracker answers without panicking and
    /// never holds more connections than packets committed.
    #[test]
    fn any_bytes_are_tracked_without_panic(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..20)) {
        let mut ct = Conntrack::new();
        for (i, mut f) in frames.into_iter().enumerate() {
            let mut m = CtMeta::default();
            ct.execute(&mut f, 1, &mut m, &commit(0), i as u64);
            prop_assert!(m.state & TRK != 0);
        }
    }

    /// Source NAT over a small range never gives two connections the same
    /// reply key, and every reply finds its own connection.
    #[test]
    fn snat_ports_never_collide(ports in proptest::collection::vec(1000u16..1064, 1..60), range in 1u16..40) {
        let mut ct = Conntrack::new();
        let ip = kairo_flow::parse::parse_ipv4("192.0.2.1").unwrap() as u32;
        let nat = Nat { kind: Some(NatKind::Src), addrs: Some(NatAddrs::V4(ip, ip)), ports: Some((7000, 7000 + range - 1)), ..Nat::default() };
        let req = Request { nat: Some(&nat), ..commit(0) };
        let mut seen = std::collections::HashSet::new();
        for p in ports {
            let mut f = udp(A, p, B, 53);
            let mut m = CtMeta::default();
            ct.execute(&mut f, 1, &mut m, &req, 0);
            if m.state & SNAT != 0 && m.state & NEW != 0 && seen.insert(p) {
                let (k, _) = kairo_wire::parse(&f, 1);
                // The reply to the translated packet comes back to the original port.
                let mut reply = udp(B, 53, "192.0.2.1", k.get(Field::TpSrc) as u16);
                let mut rm = CtMeta::default();
                ct.execute(&mut reply, 2, &mut rm, &Request { nat: Some(&Nat::default()), ..track(0) }, 0);
                let (rk, _) = kairo_wire::parse(&reply, 2);
                prop_assert_eq!(rk.get(Field::TpDst), u64::from(p));
                prop_assert_eq!(rm.state & (EST | RPL), EST | RPL);
            }
        }
        prop_assert!(ct.len() <= usize::from(range));
        let replies: std::collections::HashSet<_> = ct.dump(None, 0).iter().map(|e| e.reply).collect();
        prop_assert_eq!(replies.len(), ct.len());
    }
}

/// A UDP datagram `src:sport -> dst:dport` with `len` payload bytes, cut
/// into IPv4 fragments of at most `chunk` payload bytes (a multiple of 8).
fn fragments(src: &str, sport: u16, dst: &str, dport: u16, len: usize, chunk: usize) -> Vec<Vec<u8>> {
    let k = parse_key(&format!("in_port=1,udp,nw_src={src},nw_dst={dst},udp_src={sport},udp_dst={dport},nw_ttl=64"))
        .expect("key");
    let whole = kairo_wire::emit::frame(&k, &vec![7u8; len]);
    let (eth, ip) = (&whole[..14], &whole[14..34]);
    let payload = &whole[34..];
    payload
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut f = eth.to_vec();
            let mut h = ip.to_vec();
            let more = (i + 1) * chunk < payload.len();
            let word = ((i * chunk / 8) as u16) | if more { 0x2000 } else { 0 };
            h[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
            h[6..8].copy_from_slice(&word.to_be_bytes());
            h[10..12].copy_from_slice(&[0, 0]);
            let c = kairo_wire::checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&h);
            f.extend_from_slice(part);
            f
        })
        .collect()
}

#[test]
fn fragments_are_held_until_whole_then_tracked_as_the_datagram() {
    let mut ct = Conntrack::new();
    let mut frags = fragments(A, 5, B, 53, 100, 48);
    assert_eq!(frags.len(), 3);
    // Out of order: the last, then the first, are held; the middle completes it.
    let mut m = CtMeta::default();
    assert_eq!(ct.execute(&mut frags[2], 1, &mut m, &commit(0), 0), Verdict::Held);
    assert_eq!(ct.execute(&mut frags[0], 1, &mut m, &commit(0), 0), Verdict::Held);
    let Verdict::Fragments(out) = ct.execute(&mut frags[1], 1, &mut m, &commit(0), 0) else { panic!("not whole") };
    assert_eq!(out.len(), 3);
    assert_eq!(m.state, TRK | NEW);
    assert_eq!(ct.len(), 1, "the datagram's connection, by its ports");
    assert_eq!(ct.dump(None, 0)[0].orig.dport, 53);
    // The fragments go on as they came, in order.
    let offsets: Vec<u64> = out.iter().map(|f| u64::from(u16::from_be_bytes([f[20], f[21]]) & 0x1fff)).collect();
    assert_eq!(offsets, vec![0, 6, 12]);
    // A reply is established.
    assert_eq!(run(&mut ct, &mut udp(B, 53, A, 5), &track(0), 0), TRK | EST | RPL);
    assert_eq!(ct.frag_stats().reassembled, 1);
}

#[test]
fn fragments_that_overlap_or_never_complete_are_refused_or_dropped() {
    let mut ct = Conntrack::new();
    let mut frags = fragments(A, 5, B, 53, 100, 48);
    let mut m = CtMeta::default();
    assert_eq!(ct.execute(&mut frags[0], 1, &mut m, &commit(0), 0), Verdict::Held);
    // The same fragment again overlaps: refused, marked invalid.
    let mut again = frags[0].clone();
    assert_eq!(ct.execute(&mut again, 1, &mut m, &commit(0), 0), Verdict::Continue);
    assert_eq!(m.state, TRK | INV);
    // The rest never comes: dropped after the timeout, its memory freed.
    assert!(ct.frags.held_bytes() > 0);
    ct.expire(frag::TIMEOUT_MS, 10);
    assert_eq!(ct.frags.held_bytes(), 0);
    assert_eq!(ct.frag_stats().timed_out, 1);
    assert!(ct.is_empty());
}

#[test]
fn ipv6_fragments_are_reassembled_too() {
    let k = parse_key("in_port=1,udp6,ipv6_src=fd00::1,ipv6_dst=fd00::2,udp_src=5,udp_dst=53,nw_ttl=64").unwrap();
    let whole = kairo_wire::emit::frame(&k, &[9u8; 100]);
    let (eth, ip6, payload) = (&whole[..14], &whole[14..54], &whole[54..]);
    let frag = |part: &[u8], off: usize, more: bool| {
        let mut h = ip6.to_vec();
        h[4..6].copy_from_slice(&((8 + part.len()) as u16).to_be_bytes());
        h[6] = 44;
        let mut fh = vec![17, 0];
        fh.extend_from_slice(&(((off / 8) as u16) << 3 | u16::from(more)).to_be_bytes());
        fh.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        [eth, &h[..], &fh[..], part].concat()
    };
    let mut a = frag(&payload[..56], 0, true);
    let mut b = frag(&payload[56..], 56, false);
    let mut ct = Conntrack::new();
    let mut m = CtMeta::default();
    assert_eq!(ct.execute(&mut b, 1, &mut m, &commit(0), 0), Verdict::Held);
    let Verdict::Fragments(out) = ct.execute(&mut a, 1, &mut m, &commit(0), 0) else { panic!("not whole") };
    assert_eq!((out.len(), m.state), (2, TRK | NEW));
    let e = &ct.dump(None, 0)[0];
    assert!(e.orig.v6 && e.orig.dport == 53 && e.orig.proto == 17, "{e}");
}

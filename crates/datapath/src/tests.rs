//! The fast path against the slow path: whatever layer answers, a packet gets
//! the slow path's actions; evicted megaflows are never used.

use super::*;
use kairo_ofproto::{parse_flow_file, parse_group_file};
use kairo_testkit::{gen_case, gen_packets, GenConfig};
use kairo_xlate::{translate, Pipeline};

/// The slow path of these tests: translation alone, nothing to note.
impl SlowPath for Pipeline {
    type Note = ();
    fn upcall(&mut self, key: &FlowKey, _now: u64) -> Upcall<()> {
        let r = translate(self, key);
        Upcall { actions: r.actions, mask: r.mask, note: (), version: 0, install: !r.slow }
    }
}

fn pipeline(flows: &str, groups: &str) -> Pipeline {
    Pipeline::from_parts(parse_flow_file(flows).unwrap(), parse_group_file(groups).unwrap()).unwrap()
}

fn cfg_always_emc() -> DpConfig {
    DpConfig { emc_insert_inv_prob: 1, rerank_interval: 7, ..DpConfig::default() }
}

#[test]
fn layers_agree_with_slow_path_on_random_pipelines() {
    for seed in 0..40u64 {
        let case = gen_case(seed, &GenConfig::default());
        let mut p = pipeline(&case.flows, &case.groups);
        for cfg in [
            cfg_always_emc(),
            DpConfig { emc_insert_inv_prob: 0, ..DpConfig::default() },
            DpConfig { hash: HashMode::Rss, ..cfg_always_emc() },
        ] {
            let mut dp = Datapath::new(cfg);
            let pkts = gen_packets(seed, 60, 4);
            // Three rounds: upcalls, then megaflow hits, then EMC hits.
            for round in 0..3 {
                for spec in &pkts {
                    let k = kairo_flow::parse_key(spec).unwrap();
                    let got = dp.process_key(&k, 64, None, round, &mut p);
                    let want = translate(&p, &k).actions;
                    assert_eq!(*got, want, "seed {seed} round {round} packet {spec}");
                }
            }
            assert!(dp.stats.megaflow_hits + dp.stats.emc_hits > 0);
            assert_eq!(dp.stats.packets, 180);
        }
    }
}

#[test]
fn actions_too_big_for_the_datapath_are_forwarded_and_never_installed() {
    let mut p = pipeline("actions=group:1", &kairo_testkit::fan_out_groups(10, 4, "output:2"));
    let mut dp = Datapath::new(cfg_always_emc());
    let k = kairo_flow::parse_key("in_port=1,ip").unwrap();
    for _ in 0..3 {
        assert_eq!(dp.process_key(&k, 64, None, 0, &mut p).len(), 8192);
    }
    assert_eq!((dp.n_flows(), dp.stats.misses, dp.stats.not_installed), (0, 3, 3));
}

#[test]
fn emc_never_serves_an_evicted_megaflow() {
    let mut p = pipeline("ip,actions=output:2", "");
    let mut dp = Datapath::new(cfg_always_emc());
    let k = kairo_flow::parse_key("in_port=1,tcp,nw_dst=10.0.0.1").unwrap();
    dp.process_key(&k, 64, None, 0, &mut p);
    dp.process_key(&k, 64, None, 0, &mut p);
    assert_eq!(dp.stats.emc_hits, 1);
    let h = dp.emc_hash(&k, None);
    let mf = dp.lookup(&k, h).unwrap();
    assert_eq!(dp.stats.emc_hits, 2);
    assert!(dp.remove(&mf));
    assert!(dp.lookup(&k, h).is_none(), "EMC served an evicted megaflow");
    assert_eq!(dp.n_flows(), 0);
    // And the next packet upcalls and gets a fresh megaflow.
    dp.process_key(&k, 64, None, 1, &mut p);
    assert_eq!(dp.stats.misses, 2);
    assert_eq!(dp.n_flows(), 1);
}

#[test]
fn actions_swapped_in_place_are_seen_through_the_emc() {
    let mut p = pipeline("ip,actions=output:2", "");
    let mut dp = Datapath::new(cfg_always_emc());
    let k = kairo_flow::parse_key("in_port=1,ip").unwrap();
    dp.process_key(&k, 64, None, 0, &mut p);
    let mf = dp.megaflows().next().unwrap().clone();
    mf.set_actions(Arc::new(vec![DpAction::Output(7)]));
    assert_eq!(*dp.process_key(&k, 64, None, 0, &mut p), vec![DpAction::Output(7)]);
}

#[test]
fn flow_limit_and_idle_eviction() {
    let mut p = pipeline("tcp,actions=output:2", "");
    let mut dp = Datapath::new(DpConfig { flow_limit: 10, max_idle_ms: 1000, ..DpConfig::default() });
    // tcp rule with an exact tp_dst-free mask: one megaflow per in_port
    for port in 1..=10u32 {
        let k = kairo_flow::parse_key(&format!("in_port={port},tcp")).unwrap();
        dp.process_key(&k, 64, None, 0, &mut p);
    }
    assert_eq!(dp.n_flows(), 10);
    // Full, nothing idle: the 11th is forwarded but not installed.
    let k11 = kairo_flow::parse_key("in_port=11,tcp").unwrap();
    assert_eq!(*dp.process_key(&k11, 64, None, 500, &mut p), vec![DpAction::Output(2)]);
    assert_eq!(dp.stats.not_installed, 1);
    assert_eq!(dp.n_flows(), 10);
    // Keep ports 1-5 busy; later, 6-10 are idle and make room.
    for port in 1..=5u32 {
        let k = kairo_flow::parse_key(&format!("in_port={port},tcp")).unwrap();
        dp.process_key(&k, 64, None, 1500, &mut p);
    }
    dp.process_key(&k11, 64, None, 1600, &mut p);
    assert_eq!(dp.stats.evicted_idle, 5);
    assert_eq!(dp.n_flows(), 6);
    assert_eq!(dp.stats.installed, 11);
}

#[test]
fn a_full_cache_does_not_sweep_on_every_miss() {
    let mut p = pipeline("tcp,actions=output:999", "");
    let mut dp = Datapath::new(DpConfig { flow_limit: 4, max_idle_ms: 10_000, ..DpConfig::default() });
    for port in 1..=500u32 {
        let k = kairo_flow::parse_key(&format!("in_port={port},tcp")).unwrap();
        assert_eq!(*dp.process_key(&k, 64, None, 5, &mut p), vec![DpAction::Output(999)]);
    }
    assert_eq!(dp.n_flows(), 4);
    assert_eq!(dp.stats.not_installed, 496);
    assert_eq!(dp.stats.sweeps, 1, "one sweep per tenth of max-idle, not one per miss");
}

#[test]
fn batched_lookup_equals_single_lookups() {
    let case = gen_case(3, &GenConfig::default());
    let mut p = pipeline(&case.flows, &case.groups);
    let mut dp = Datapath::new(DpConfig { emc_insert_inv_prob: 0, ..DpConfig::default() });
    let keys: Vec<FlowKey> = gen_packets(3, 200, 1).iter().map(|s| kairo_flow::parse_key(s).unwrap()).collect();
    for k in &keys {
        dp.process_key(k, 1, None, 0, &mut p);
    }
    let mut cls = dp.cls.remove(&1).unwrap();
    let mut dead = Vec::new();
    for chunk in keys.chunks(BATCH) {
        let mut out: [Option<Arc<Megaflow>>; BATCH] = Default::default();
        cls.lookup_batch(chunk, &mut out, &mut dead);
        for (k, o) in chunk.iter().zip(out.iter()) {
            let single = cls.lookup(k, &mut dead);
            assert_eq!(o.as_ref().map(Arc::as_ptr), single.as_ref().map(Arc::as_ptr));
            assert!(o.is_some());
        }
    }
}

#[test]
fn packets_on_the_wire_get_the_slow_path_effect() {
    use etherparse::PacketBuilder;
    let mut p = pipeline(
        "tcp,nw_dst=10.0.0.2,actions=mod_dl_dst:00:00:00:00:00:99,mod_nw_dst:10.9.9.9,dec_ttl,mod_tp_dst:8080,output:2,push_vlan:0x8100,mod_vlan_vid:7,output:3\n\
         udp,actions=mod_nw_src:1.2.3.4,output:4",
        "",
    );
    let mk_tcp = || {
        let b = PacketBuilder::ethernet2([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 80, 1, 4096);
        let mut v = Vec::new();
        b.write(&mut v, &[1, 2, 3]).unwrap();
        v
    };
    let mk_udp = || {
        let b = PacketBuilder::ethernet2([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 3], 64)
            .udp(1, 53);
        let mut v = Vec::new();
        b.write(&mut v, &[7; 9]).unwrap();
        v
    };
    let mut dp = Datapath::new(cfg_always_emc());
    for round in 0..3 {
        let mut pkts: Vec<crate::Packet> =
            (0..40).map(|i| crate::Packet::new(if i % 2 == 0 { mk_tcp() } else { mk_udp() }, 1)).collect();
        let inputs: Vec<Vec<u8>> = pkts.iter().map(|p| p.bytes.clone()).collect();
        let mut sent: Vec<(u32, Vec<u8>)> = Vec::new();
        dp.process_packets(&mut pkts, round, &mut p, &mut |to, b, _| {
            let port = match to {
                crate::execute::Sent::Port(p) => p,
                crate::execute::Sent::Controller(_) | crate::execute::Sent::Recirc { .. } => u32::MAX,
            };
            sent.push((port, b.to_vec()))
        });
        // Compare with the slow path's effect on keys.
        let mut want = Vec::new();
        for inp in &inputs {
            let (k, _) = kairo_wire::parse(inp, 1);
            want.extend(kairo_xlate::odp::apply(&translate(&p, &k).actions, &k));
        }
        let got: Vec<(u32, FlowKey)> =
            sent.iter().map(|(port, b)| (*port, kairo_xlate::odp::packet_fields(&kairo_wire::parse(b, 1).0))).collect();
        assert_eq!(got, want, "round {round}");
        for (_, b) in &sent {
            // Independent checksum verification (etherparse).
            let sliced = etherparse::SlicedPacket::from_ethernet(b).unwrap();
            if let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                if let Some(etherparse::TransportSlice::Tcp(t)) = &sliced.transport {
                    let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
                    assert_eq!(t.checksum(), want);
                }
                if let Some(etherparse::TransportSlice::Udp(u)) = &sliced.transport {
                    let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                    assert_eq!(u.checksum(), want);
                }
            }
        }
    }
    assert!(dp.stats.emc_hits > 0 && dp.stats.misses == 2, "{:?}", dp.stats);
}

/// `check_pkt_len` on the wire: one megaflow serves short and long frames,
/// each taking the list its length picks (a rewrite in one list does not
/// reach the output after the action), as `apply_len` says; Ethernet
/// padding is not counted.
#[test]
fn frames_take_the_list_their_length_picks() {
    let mut p = pipeline(
        "table=0,udp,actions=check_pkt_larger(100)->reg0[0],resubmit(,1),output:4\n\
         table=1,reg0=0x1,actions=mod_nw_dst:10.9.9.9,output:2\n\
         table=1,priority=0,actions=output:3",
        "",
    );
    let k = kairo_flow::parse_key("in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,udp_src=1,udp_dst=2").unwrap();
    // 14 + 20 + 8 + payload bytes: 60 (padded to 60 from 46), 100 and 101.
    let frames = [
        kairo_wire::emit::frame(&k, &[0; 4]),
        kairo_wire::emit::frame(&k, &[0; 58]),
        kairo_wire::emit::frame(&k, &[0; 59]),
    ];
    let mut padded = frames[0].clone();
    padded.resize(60, 0);
    let mut dp = Datapath::new(cfg_always_emc());
    for (bytes, len, want) in [(&padded, 46, vec![3, 4]), (&frames[1], 100, vec![3, 4]), (&frames[2], 101, vec![2, 4])]
    {
        assert_eq!(kairo_wire::offload::wire_len(bytes, &kairo_wire::parse(bytes, 1).1), len);
        let mut pkts = vec![crate::Packet::new(bytes.clone(), 1)];
        let mut sent: Vec<(u32, FlowKey)> = Vec::new();
        dp.process_packets(&mut pkts, 1, &mut p, &mut |to, b, _| {
            if let crate::execute::Sent::Port(port) = to {
                sent.push((port, kairo_xlate::odp::packet_fields(&kairo_wire::parse(b, 1).0)));
            }
        });
        let ports: Vec<u32> = sent.iter().map(|(p, _)| *p).collect();
        assert_eq!(ports, want, "{len} bytes");
        let actions = translate(&p, &k).actions;
        assert_eq!(sent, kairo_xlate::odp::apply_len(&actions, &k, len), "{len} bytes");
    }
    assert_eq!(dp.stats.misses, 1, "one megaflow for every length: {:?}", dp.stats);
}

/// A flow's meter drops what exceeds its band, in the datapath, for cache
/// hits as for the first packet; the meter's counters see every packet.
#[test]
fn metered_flows_drop_over_the_rate() {
    use crate::meter::{Band, BandKind, MeterConfig};
    let mut p = pipeline("priority=1,actions=meter:1,output:2", "");
    let mut dp = Datapath::new(cfg_always_emc());
    let band = Band { kind: BandKind::Drop, rate: 10, burst: 10 };
    dp.meters.set(1, MeterConfig { pktps: true, burst: true, stats: true, bands: vec![band] }, false).unwrap();
    let pkt = || {
        let k = kairo_flow::parse_key("in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,udp_src=1,udp_dst=2").unwrap();
        kairo_wire::emit::frame(&k, &[0; 18])
    };
    let mut pkts: Vec<crate::Packet> = (0..40).map(|_| crate::Packet::new(pkt(), 1)).collect();
    let mut sent = 0;
    dp.process_packets(&mut pkts, 1, &mut p, &mut |_, _, _| sent += 1);
    // All within far less than the 100 ms a token takes: the burst of 10 passes.
    assert_eq!(sent, 10);
    let c = dp.meters.counters(1).unwrap();
    assert_eq!((c.packets, c.bands[0].0), (40, 30));
    assert_eq!(translate(&p, &kairo_wire::parse(&pkt(), 1).0).actions, vec![DpAction::Meter(1), DpAction::Output(2)]);
}

/// MPLS on the wire: pushes, pops and sets the datapath makes of the slow
/// path's actions give the packets `apply` describes (parsed back), pass
/// after pass (a pop recirculates before an L3 rewrite), and a label pushed
/// and popped again leaves the IP packet byte for byte.
#[test]
fn mpls_packets_on_the_wire_get_the_slow_path_effect() {
    let mut p = pipeline(
        "in_port=1,tcp,actions=push_mpls:0x8847,set_field:100->mpls_label,output:2,pop_mpls:0x0800,mod_nw_dst:10.9.9.9,output:3\n\
         in_port=1,mpls,mpls_bos=1,actions=dec_mpls_ttl,set_mpls_tc:5,output:2,pop_mpls:0x0800,output:3\n\
         in_port=1,mpls,mpls_bos=0,actions=pop_mpls:0x8847,output:4,push_mpls:0x8848,set_mpls_ttl(7),output:5",
        "",
    );
    let tcp =
        kairo_flow::parse_key("in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,nw_ttl=64,nw_tos=0x28,tp_src=1,tp_dst=80")
            .unwrap();
    let one = kairo_flow::parse_key("in_port=1,mpls,mpls_label=5,mpls_tc=1,mpls_ttl=9,mpls_bos=1").unwrap();
    let mut two = kairo_flow::parse_key("in_port=1,mpls,mpls_label=6,mpls_ttl=3,mpls_bos=0").unwrap();
    two.set_mpls_lse(1, 9 << 12 | 1 << 8 | 30);
    let mut dp = Datapath::new(cfg_always_emc());
    for round in 0..2 {
        for k in [tcp, one, two] {
            let frame = kairo_wire::emit::frame(&k, &[0xab; 20]);
            let (parsed, _) = kairo_wire::parse(&frame, 1);
            assert_eq!(parsed, k);
            let mut pkts = vec![crate::Packet::new(frame.clone(), 1)];
            let mut sent: Vec<(u32, Vec<u8>)> = Vec::new();
            dp.process_packets(&mut pkts, round, &mut p, &mut |to, b, _| {
                if let crate::execute::Sent::Port(port) = to {
                    sent.push((port, b.to_vec()))
                }
            });
            // Every pass (a pop recirculates before an L3 rewrite).
            let want: Vec<(u32, FlowKey)> = kairo_xlate::recirc::follow(&p, &k)
                .iter()
                .flat_map(|pass| kairo_xlate::odp::apply(&pass.result.actions, &pass.key))
                .filter(|(port, _)| *port != kairo_xlate::odp::RECIRC_PORT)
                .map(|(port, k)| (port, kairo_xlate::odp::packet_fields(&k)))
                .collect();
            let got: Vec<(u32, FlowKey)> = sent
                .iter()
                .map(|(port, b)| (*port, kairo_xlate::odp::packet_fields(&kairo_wire::parse(b, 1).0)))
                .collect();
            assert_eq!(got, want, "round {round}: {k:?}");
            if k == tcp {
                // Pushed and popped: the IPv4 packet again, but for its new destination.
                let (back, _) = kairo_wire::parse(&sent[1].1, 1);
                assert_eq!(back.get(Field::IpDst), 0x0a09_0909);
                assert_eq!(sent[1].1.len(), frame.len());
                assert_eq!(sent[0].1.len(), frame.len() + 4);
            }
        }
    }
}

/// A slow path that can be busy (an update holding it), for upcalls and
/// for registering what they installed, separately.
struct Busy {
    p: Pipeline,
    upcalls_wait: bool,
    installs_wait: bool,
    upcalls: usize,
}

impl SlowPath for Busy {
    type Note = ();
    fn upcall(&mut self, key: &FlowKey, now: u64) -> Upcall<()> {
        assert!(!self.upcalls_wait, "a blocking upcall while the slow path is busy");
        self.upcalls += 1;
        self.p.upcall(key, now)
    }
    fn try_upcall(&mut self, key: &FlowKey, now: u64) -> Option<Upcall<()>> {
        (!self.upcalls_wait).then(|| self.upcall(key, now))
    }
    fn try_installed(&mut self, _mf: &Arc<Megaflow>, _note: (), _version: u64) -> Result<(), ()> {
        if self.installs_wait {
            Err(())
        } else {
            Ok(())
        }
    }
    fn busy(&self) -> bool {
        self.upcalls_wait
    }
}

fn udp_to(dst: u8, sport: u16) -> Packet {
    let k =
        kairo_flow::parse_key(&format!("in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.{dst},udp_src={sport},udp_dst=53"))
            .unwrap();
    Packet::new(kairo_wire::emit::frame(&k, &sport.to_be_bytes()), 1)
}

/// The source port of each frame sent, in order.
fn run(dp: &mut Datapath, pkts: &mut [Packet], slow: &mut Busy) -> Vec<(u32, u16)> {
    let mut sent = Vec::new();
    dp.process_packets(pkts, 1, slow, &mut |to, b, _| {
        if let execute::Sent::Port(p) = to {
            sent.push((p, kairo_wire::parse(b, 0).0.get(Field::TpSrc) as u16));
        }
    });
    sent
}

#[test]
fn misses_park_while_the_slow_path_is_busy_and_hits_go_on() {
    let p =
        pipeline("priority=1,ip,nw_dst=10.0.0.2,actions=output:2\npriority=1,ip,nw_dst=10.0.0.3,actions=output:3", "");
    let mut slow = Busy { p, upcalls_wait: false, installs_wait: false, upcalls: 0 };
    let mut dp = Datapath::new(cfg_always_emc());
    // A megaflow for 10.0.0.2.
    assert_eq!(run(&mut dp, &mut [udp_to(2, 1)], &mut slow), vec![(2, 1)]);
    // Busy: hits are forwarded, misses parked (none of them waits).
    slow.upcalls_wait = true;
    let mut batch = vec![udp_to(2, 2), udp_to(3, 3), udp_to(2, 4), udp_to(3, 5)];
    assert_eq!(run(&mut dp, &mut batch, &mut slow), vec![(2, 2), (2, 4)]);
    assert_eq!((dp.n_parked(), dp.stats.parked), (2, 2));
    // Still busy: nothing is tried again; a later miss queues behind.
    assert_eq!(run(&mut dp, &mut [udp_to(3, 6)], &mut slow), vec![]);
    assert_eq!(dp.n_parked(), 3);
    // Free again: the parked go first, in their order, then the new ones.
    slow.upcalls_wait = false;
    assert_eq!(run(&mut dp, &mut [udp_to(3, 7)], &mut slow), vec![(3, 3), (3, 5), (3, 6), (3, 7)]);
    assert_eq!((dp.n_parked(), slow.upcalls), (0, 2), "one upcall for the parked flow, the rest hit its megaflow");
    assert_eq!(dp.n_flows(), 2);
    assert_eq!(dp.stats.packets, 7, "a parked packet is counted once, when it is taken up");
}

#[test]
fn a_megaflow_the_slow_path_cannot_register_is_not_kept() {
    let p = pipeline("priority=1,ip,actions=output:2", "");
    let mut slow = Busy { p, upcalls_wait: false, installs_wait: true, upcalls: 0 };
    let mut dp = Datapath::new(cfg_always_emc());
    // Answered but not registered (an update began in between): forwarded,
    // and the next packet of the flow comes up again.
    assert_eq!(run(&mut dp, &mut [udp_to(2, 1)], &mut slow), vec![(2, 1)]);
    assert_eq!(dp.n_flows(), 0);
    assert_eq!(run(&mut dp, &mut [udp_to(2, 2)], &mut slow), vec![(2, 2)]);
    assert_eq!((slow.upcalls, dp.stats.not_installed), (2, 2));
    slow.installs_wait = false;
    run(&mut dp, &mut [udp_to(2, 3)], &mut slow);
    run(&mut dp, &mut [udp_to(2, 4)], &mut slow);
    assert_eq!((slow.upcalls, dp.n_flows()), (3, 1));
}

#[test]
fn parking_is_bounded() {
    let p = pipeline("priority=1,ip,actions=output:2", "");
    let mut slow = Busy { p, upcalls_wait: true, installs_wait: false, upcalls: 0 };
    let mut dp = Datapath::new(cfg_always_emc());
    let mut batch: Vec<Packet> = (0..PARKED_MAX + 10).map(|i| udp_to(2, i as u16)).collect();
    assert_eq!(run(&mut dp, &mut batch, &mut slow), vec![]);
    assert_eq!((dp.n_parked(), dp.stats.parked_dropped), (PARKED_MAX, 10));
    slow.upcalls_wait = false;
    assert_eq!(run(&mut dp, &mut [], &mut slow).len(), PARKED_MAX);
}

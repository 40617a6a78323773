//! No heap allocation per packet in steady state (the KVS paper's point:
//! one reused set of buffers per core). A counting global allocator, armed
//! on this thread only, counts what a million packets through established
//! megaflows allocate in `process_packets`: EMC hits and megaflow hits,
//! header rewrites, a VLAN push, and frames whose checksum their sender
//! left partial. It must be nothing.

use std::sync::Arc;

use kairo_datapath::{Datapath, DpConfig, Megaflow, Packet, SlowPath, Upcall};
use kairo_flow::FlowKey;
use kairo_wire::offload::{VnetHdr, F_NEEDS_CSUM};
use kairo_xlate::Pipeline;

#[global_allocator]
static ALLOC: kairo_testkit::alloc::Counting = kairo_testkit::alloc::Counting;

/// Translation alone, as the slow path.
struct Slow(Pipeline);

impl SlowPath for Slow {
    type Note = ();
    fn upcall(&mut self, key: &FlowKey, _now: u64) -> Upcall<()> {
        let r = kairo_xlate::translate(&self.0, key);
        Upcall { actions: r.actions, mask: r.mask, note: (), version: 0, install: !r.slow }
    }
    fn installed(&mut self, _mf: &Arc<Megaflow>, _note: (), _version: u64) {}
}

const FLOWS: &str = "\
priority=30,tcp,nw_dst=10.1.0.0/16,actions=mod_nw_dst:192.168.0.9,mod_tp_dst:8080,output:3
priority=20,udp,nw_dst=10.2.0.0/16,actions=push_vlan:0x8100,set_field:4106->vlan_vid,output:4
priority=10,ip,actions=dec_ttl,mod_dl_dst:02:00:00:00:00:02,output:2
";

#[test]
fn a_million_packets_through_established_megaflows_allocate_nothing() {
    let ff = kairo_ofproto::parse_flow_file(FLOWS).expect("flows");
    let mut slow = Slow(Pipeline::from_parts(ff, Vec::new()).expect("pipeline"));
    let mut dp = Datapath::new(DpConfig::default());
    // 3000 flows over the three rules; every fourth TCP frame with its
    // checksum left partial, as a veth with offloads hands it over.
    let templates: Vec<Packet> = (0..3000u32)
        .map(|i| {
            let (proto, net) = match i % 3 {
                0 => ("tcp", 1),
                1 => ("udp", 2),
                _ => ("tcp", 3),
            };
            let k = kairo_flow::parse_key(&format!(
                "in_port={},{proto},nw_src=10.9.{}.{},nw_dst=10.{net}.{}.{},nw_ttl=64,tp_src={},tp_dst=80",
                1 + i % 2,
                i / 256,
                i % 256,
                i % 7,
                i % 200,
                1000 + i
            ))
            .expect("key");
            let bytes = kairo_wire::emit::frame(&k, &[0x42; 64]);
            let vnet = (proto == "tcp" && i % 4 == 0).then_some(VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 16,
                ..VnetHdr::default()
            });
            let mut p = Packet::new(bytes, 1 + i % 2);
            p.vnet = vnet;
            p
        })
        .collect();
    let mut batch: Vec<Packet> = Vec::with_capacity(kairo_datapath::BATCH);
    let mut sent = 0u64;
    let mut out = |_: kairo_datapath::execute::Sent, b: &[u8], _: &kairo_wire::Layout| sent += b.len() as u64;
    let mut round = |dp: &mut Datapath, slow: &mut Slow, start: usize, batch: &mut Vec<Packet>| {
        // The batch's buffers are reused: refilled from the templates.
        batch.resize_with(kairo_datapath::BATCH, Packet::default);
        for (j, p) in batch.iter_mut().enumerate() {
            let t = &templates[(start + j) % templates.len()];
            p.bytes.clear();
            p.bytes.extend_from_slice(&t.bytes);
            (p.in_port, p.rss, p.vnet) = (t.in_port, t.rss, t.vnet);
        }
        dp.process_packets(batch, 1, slow, &mut out);
    };
    // Warm-up: every flow's megaflow installed, buffers grown.
    for r in 0..(2 * templates.len()).div_ceil(kairo_datapath::BATCH) {
        round(&mut dp, &mut slow, r * kairo_datapath::BATCH, &mut batch);
    }
    let misses = dp.stats.misses;
    assert!(dp.n_flows() > 0 && misses > 0);
    kairo_testkit::alloc::arm(true);
    let rounds = 1_000_000 / kairo_datapath::BATCH;
    for r in 0..rounds {
        round(&mut dp, &mut slow, r * kairo_datapath::BATCH, &mut batch);
    }
    kairo_testkit::alloc::arm(false);
    let allocs = kairo_testkit::alloc::count();
    assert_eq!(dp.stats.misses, misses, "steady state: no upcall");
    assert!(dp.stats.emc_hits > 0 && dp.stats.megaflow_hits > 0, "{:?}", dp.stats);
    assert!(sent > 0);
    assert_eq!(allocs, 0, "{allocs} allocations for {} packets", rounds * kairo_datapath::BATCH);
}

//! The whole forwarding loop allocates nothing per packet in steady state:
//! a port that hands the switch frames in the loop's own pooled buffers and
//! takes what it sends without copying, a counting global allocator armed
//! on the forwarding thread once every flow has its megaflow, a million
//! packets. (The datapath alone: `kairo-datapath`'s `no_alloc` test.)

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kairo_datapath::DpConfig;
use kairo_maintain::EngineKind;
use kairo_switch::{Attached, Packet, Port, PortCounters, Switch};
use kairo_wire::offload::VnetHdr;

#[global_allocator]
static ALLOC: kairo_testkit::alloc::Counting = kairo_testkit::alloc::Counting;

/// Frames from templates, in the loop's pooled buffers; arms the counter
/// once `warm` frames are out and stops the switch after `total`.
struct Source {
    templates: Arc<Vec<Vec<u8>>>,
    next: usize,
    warm: usize,
    total: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    allocs: Arc<AtomicU64>,
}

impl Port for Source {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn fd(&self) -> Option<RawFd> {
        None
    }
    fn recv(&mut self, out: &mut Vec<Packet>, pool: &mut Vec<Vec<u8>>, max: usize, _c: &PortCounters) -> usize {
        if self.next == self.warm {
            kairo_testkit::alloc::arm(true);
        }
        if self.next >= self.total {
            kairo_testkit::alloc::arm(false);
            self.allocs.store(kairo_testkit::alloc::count(), Ordering::SeqCst);
            self.stop.store(true, Ordering::SeqCst);
            return 0;
        }
        let n = max.min(32).min(self.total - self.next);
        for _ in 0..n {
            let mut b = pool.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(&self.templates[self.next % self.templates.len()]);
            out.push(Packet::new(b, 0));
            self.next += 1;
        }
        n
    }
    fn send(&mut self, frame: &[u8], _vnet: Option<&VnetHdr>, _c: &PortCounters) {
        self.sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
    }
}

#[test]
fn the_forwarding_loop_allocates_nothing_per_packet() {
    let flows = "priority=10,in_port=1,ip,actions=dec_ttl,mod_nw_dst:192.168.7.7,in_port\n";
    let ff = kairo_ofproto::parse_flow_file(flows).expect("flows");
    let pipeline = kairo_xlate::Pipeline::from_parts(ff, Vec::new()).expect("pipeline");
    let templates: Vec<Vec<u8>> = (0..500u32)
        .map(|i| {
            let k = kairo_flow::parse_key(&format!(
                "in_port=1,udp,nw_src=10.0.{}.{},nw_dst=10.1.0.1,nw_ttl=9,tp_src={},tp_dst=53",
                i / 256,
                i % 256,
                2000 + i
            ))
            .expect("key");
            kairo_wire::emit::frame(&k, &[7; 32])
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, allocs) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(u64::MAX)));
    let port = Source {
        templates: Arc::new(templates),
        next: 0,
        warm: 20_000,
        total: 1_020_000,
        stop: stop.clone(),
        sent: sent.clone(),
        allocs: allocs.clone(),
    };
    let attached = Attached { ofport: 1, name: "src".into(), io: Box::new(port), counters: Default::default() };
    let sw = Switch::new(pipeline, EngineKind::Incremental, DpConfig::default(), vec![attached.info()]);
    sw.forward(vec![attached], &stop);
    let allocs = allocs.load(Ordering::SeqCst);
    let st = sw.dp.lock().expect("datapath").stats;
    assert!(st.misses <= 500 && st.packets >= 1_020_000, "{st:?}");
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert_eq!(allocs, 0, "{allocs} allocations on the forwarding thread for a million packets");
}

//! Warm lookup cost of a classifier shaped like Antrea's EndpointDNAT table
//! (1,600 rules on a register, a masked register and the protocol, in four
//! subtables) and like a routing table (prefixes of many lengths): keys
//! that hit and keys that miss, per lookup. A diagnostic for the
//! classifier's own cost; run with
//! `cargo run --release -p kairo-classifier --example lookup_probe [ROUNDS]`.

use std::time::Instant;

use kairo_classifier::{Classifier, ClsRule};
use kairo_flow::{parse_key, parse_match, Field, FlowMask, Match};

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let mut dnat: Classifier<(Match, u32)> = Classifier::new();
    let mut id = 0u64;
    for pod in 0..400u32 {
        for (proto, port) in [("tcp", 80), ("tcp", 443), ("tcp", 8080), ("udp", 53)] {
            let m = parse_match(&format!("{proto},reg3={:#x},reg4={:#x}/0x7ffff", 0x0a0a_0000 + pod, 0x20000 | port))
                .expect("match");
            id += 1;
            dnat.insert(ClsRule { id, priority: 200, payload: (m, id as u32) });
        }
    }
    dnat.insert(ClsRule { id: id + 1, priority: 0, payload: (parse_match("").expect("match"), 0u32) });
    let mut routes: Classifier<(Match, u32)> = Classifier::new();
    for i in 0..4000u32 {
        let len = 8 + i % 25;
        let v = (i.wrapping_mul(2_654_435_761)) & (u32::MAX << (32 - len));
        let m = parse_match(&format!("ip,nw_dst={}/{len}", std::net::Ipv4Addr::from(v))).expect("match");
        routes.insert(ClsRule { id: u64::from(i) + 1, priority: len as u16, payload: (m, i) });
    }
    let base = parse_key("in_port=10,tcp,nw_src=10.10.0.2,nw_dst=10.10.0.9,tp_src=1234,tp_dst=80").expect("key");
    let keys: Vec<_> = (0..4096u64)
        .map(|i| {
            base.with(Field::Reg3, 0x0a0a_0000 + (i % 500))
                .with(Field::Reg4, 0x20000 | [80, 443, 8080, 53][(i % 4) as usize])
                .with(Field::IpDst, i.wrapping_mul(0x9e37_79b9) & 0xffff_ffff)
        })
        .collect();
    for (name, cls) in [("EndpointDNAT", &dnat), ("routes", &routes)] {
        let t = Instant::now();
        let mut sink = 0u64;
        for _ in 0..rounds {
            for k in &keys {
                let mut wc = FlowMask::ZERO;
                sink += cls.lookup(k, &mut wc).map_or(0, |r| u64::from(r.payload.1));
            }
        }
        let per = t.elapsed().as_secs_f64() * 1e9 / (rounds * keys.len()) as f64;
        println!("{name:>14}: {per:6.1} ns per lookup ({sink})");
    }
}

//! An OF-DPA-shaped pipeline (10 tables: port, VLAN, termination MAC, MPLS, unicast and multicast routing, bridging, ACL policy, punt), generated from a seed as
//! ovs-ofctl text, with traffic and an update stream shaped like a real
//! deployment's.
//!
//! Tables: 0 ingress port, 10 VLAN, 20 termination MAC, 23 and 24 MPLS
//! (present, unused by IPv4 traffic), 30 unicast routing (LPM on nw_dst,
//! prefix lengths from the ClassBench seed), 40 multicast routing, 50
//! bridging (vlan + eth_dst), 60 ACL policy (ClassBench filters), 63 punt.
//! Forwarding goes through write-actions and groups: L2 interface, L3
//! unicast, ECMP select and flood groups, with OF-DPA's group-id layout.
//!
//! Invariant: the text loads into kairo and into `ovs-ofctl -O OpenFlow13`;
//! generation is a pure function of the seed, the config and the ClassBench
//! statistics.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::classbench::{Filter, Seed};

/// Sizes of the generated pipeline.
#[derive(Clone, Debug)]
pub struct OfdpaConfig {
    pub ports: u32,
    pub vlans: u32,
    pub routes: usize,
    pub macs: usize,
    pub acls: usize,
    pub ecmp_groups: u32,
    pub next_hops: u32,
}

impl Default for OfdpaConfig {
    fn default() -> Self {
        OfdpaConfig { ports: 4, vlans: 4, routes: 4000, macs: 1000, acls: 500, ecmp_groups: 16, next_hops: 32 }
    }
}

/// Router MAC (termination MAC of every VLAN).
pub const ROUTER_MAC: u64 = 0x0000_0000_aa01;

fn mac(v: u64) -> String {
    kairo_flow::parse::format_mac(v)
}
fn ip(v: u32) -> String {
    std::net::Ipv4Addr::from(v).to_string()
}

/// OF-DPA group ids.
pub fn l2_group(vlan: u32, port: u32) -> u32 {
    (vlan << 16) | port
}
pub fn l3_group(i: u32) -> u32 {
    0x2000_0000 | i
}
pub fn ecmp_group(i: u32) -> u32 {
    0x7000_0000 | i
}
pub fn flood_group(vlan: u32) -> u32 {
    0x4000_0000 | (vlan << 16)
}

/// The VLAN of an access port.
pub fn vlan_of(port: u32, cfg: &OfdpaConfig) -> u32 {
    (port - 1) % cfg.vlans + 1
}

/// A generated pipeline and what traffic and updates need to know about it.
#[derive(Clone, Debug)]
pub struct Ofdpa {
    pub flows: String,
    pub groups: String,
    pub cfg: OfdpaConfig,
    /// (prefix, length, target group)
    pub routes: Vec<(u32, u32, u32)>,
    /// (vlan, mac, port)
    pub macs: Vec<(u32, u64, u32)>,
    pub acls: Vec<Filter>,
}

/// One ACL filter as flow lines (port ranges expanded into prefixes; when
/// the expansion would need more than 8 rules, the first source-port prefix
/// is kept, a narrower rule than the filter).
pub fn acl_lines(f: &Filter, priority: u16, action: &str) -> Vec<String> {
    let proto = match f.proto {
        Some(6) => "tcp".to_string(),
        Some(17) => "udp".to_string(),
        Some(1) => "icmp".to_string(),
        Some(p) => format!("ip,nw_proto={p}"),
        None => "ip".to_string(),
    };
    let (tp_s, tp_d) = match f.proto {
        Some(6) => ("tcp_src", "tcp_dst"),
        _ => ("udp_src", "udp_dst"),
    };
    let pfx = |v: u32, m: u32| if m == 0 { None } else { Some(format!("{}/{}", ip(v), m.count_ones())) };
    let mut base = vec![proto];
    if let Some(s) = pfx(f.src.0, f.src.1) {
        base.push(format!("nw_src={s}"));
    }
    if let Some(d) = pfx(f.dst.0, f.dst.1) {
        base.push(format!("nw_dst={d}"));
    }
    let sp: Vec<Option<(u16, u16)>> =
        f.sport.as_ref().map_or(vec![None], |p| p.prefixes.iter().map(|x| Some(*x)).collect());
    let dp: Vec<Option<(u16, u16)>> =
        f.dport.as_ref().map_or(vec![None], |p| p.prefixes.iter().map(|x| Some(*x)).collect());
    let sp = if sp.len() * dp.len() > 8 { vec![sp[0]] } else { sp };
    let dp = if sp.len() * dp.len() > 8 { dp[..8 / sp.len()].to_vec() } else { dp };
    let port = |name: &str, p: (u16, u16)| {
        if p.1 == 0xffff {
            format!("{name}={}", p.0)
        } else {
            format!("{name}={:#x}/{:#x}", p.0, p.1)
        }
    };
    let mut out = Vec::new();
    for s in &sp {
        for d in &dp {
            let mut m = base.clone();
            if let Some(s) = s {
                m.push(port(tp_s, *s));
            }
            if let Some(d) = d {
                m.push(port(tp_d, *d));
            }
            out.push(format!("table=60,priority={priority},{},actions={action}", m.join(",")));
        }
    }
    out
}

/// Generates the pipeline.
pub fn generate(seed: &Seed, cfg: &OfdpaConfig, rng_seed: u64) -> Ofdpa {
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let mut g = String::from("# OF-DPA-shaped groups (kairo workload)\n");
    for v in 1..=cfg.vlans {
        for p in 1..=cfg.ports {
            g.push_str(&format!("group_id={},type=indirect,bucket=pop_vlan,output:{p}\n", l2_group(v, p)));
        }
    }
    for i in 0..cfg.next_hops {
        let p = i % cfg.ports + 1;
        let v = vlan_of(p, cfg);
        g.push_str(&format!(
            "group_id={},type=indirect,bucket=mod_dl_src:{},mod_dl_dst:{},set_field:{}->vlan_vid,dec_ttl,group:{}\n",
            l3_group(i),
            mac(ROUTER_MAC),
            mac(0x0200_0000_0000 | i as u64),
            4096 + v,
            l2_group(v, p)
        ));
    }
    for e in 0..cfg.ecmp_groups {
        let buckets: Vec<String> =
            (0..4).map(|k| format!("bucket=group:{}", l3_group((e * 4 + k) % cfg.next_hops))).collect();
        g.push_str(&format!("group_id={},type=select,{}\n", ecmp_group(e), buckets.join(",")));
    }
    for v in 1..=cfg.vlans {
        let buckets: Vec<String> = (1..=cfg.ports).map(|p| format!("bucket=group:{}", l2_group(v, p))).collect();
        g.push_str(&format!("group_id={},type=all,{}\n", flood_group(v), buckets.join(",")));
    }

    let mut f = String::from(
        "# OF-DPA-shaped pipeline (kairo workload): 0 port, 10 VLAN, 20 termination MAC, 23/24 MPLS,\n\
         # 30 unicast routing, 40 multicast routing, 50 bridging, 60 ACL policy, 63 punt.\n",
    );
    for p in 1..=cfg.ports {
        f.push_str(&format!("table=0,priority=100,in_port={p},actions=goto_table:10\n"));
    }
    f.push_str("table=0,priority=0,actions=drop\n");
    for p in 1..=cfg.ports {
        let v = vlan_of(p, cfg);
        f.push_str(&format!("table=10,priority=100,in_port={p},dl_vlan=0xffff,actions=push_vlan:0x8100,set_field:{}->vlan_vid,goto_table:20\n", 4096 + v));
        f.push_str(&format!("table=10,priority=90,in_port={p},dl_vlan={v},actions=goto_table:20\n"));
    }
    for v in 1..=cfg.vlans {
        f.push_str(&format!("table=20,priority=100,ip,dl_vlan={v},dl_dst={},actions=goto_table:30\n", mac(ROUTER_MAC)));
    }
    f.push_str("table=20,priority=90,ip,dl_dst=01:00:5e:00:00:00/ff:ff:ff:80:00:00,actions=goto_table:40\n");
    f.push_str("table=20,priority=0,actions=goto_table:50\n");
    f.push_str("table=23,priority=10,dl_type=0x8847,actions=drop\ntable=24,priority=10,dl_type=0x8847,actions=drop\n");
    // Routes under 10.0.0.0/8 with the seed's destination prefix lengths (at least /9).
    let mut routes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while routes.len() < cfg.routes {
        let len = seed.sample(&mut rng).dst.1.count_ones().clamp(9, 32);
        let pfx = (10u32 << 24) | (rng.gen::<u32>() & 0x00ff_ffff);
        let pfx = pfx & (u32::MAX << (32 - len));
        if !seen.insert((pfx, len)) {
            continue;
        }
        let target = if rng.gen_bool(0.7) {
            ecmp_group(rng.gen_range(0..cfg.ecmp_groups))
        } else {
            l3_group(rng.gen_range(0..cfg.next_hops))
        };
        f.push_str(&format!(
            "table=30,priority={len},ip,nw_dst={}/{len},actions=write_actions(group:{target}),goto_table:60\n",
            ip(pfx)
        ));
        routes.push((pfx, len, target));
    }
    f.push_str(&format!("table=30,priority=0,ip,actions=write_actions(group:{}),goto_table:60\n", ecmp_group(0)));
    f.push_str(&format!(
        "table=40,priority=100,ip,nw_dst=224.0.0.0/4,actions=write_actions(group:{}),goto_table:60\n",
        flood_group(1)
    ));
    let mut macs = Vec::new();
    for i in 0..cfg.macs {
        let (v, p) = (rng.gen_range(1..=cfg.vlans), rng.gen_range(1..=cfg.ports));
        let m = 0x0000_1000_0000 | i as u64;
        f.push_str(&format!(
            "table=50,priority=100,dl_vlan={v},dl_dst={},actions=write_actions(group:{}),goto_table:60\n",
            mac(m),
            l2_group(v, p)
        ));
        macs.push((v, m, p));
    }
    for v in 1..=cfg.vlans {
        f.push_str(&format!(
            "table=50,priority=10,dl_vlan={v},actions=write_actions(group:{}),goto_table:60\n",
            flood_group(v)
        ));
    }
    let mut acls = Vec::new();
    for i in 0..cfg.acls {
        let filt = seed.sample(&mut rng);
        let action = match rng.gen_range(0..10) {
            0..=5 => "clear_actions",
            6 => "goto_table:63",
            _ => "write_metadata:0x1/0x1",
        };
        for l in acl_lines(&filt, (60000 - i) as u16, action) {
            f.push_str(&l);
            f.push('\n');
        }
        acls.push(filt);
    }
    f.push_str("table=63,priority=0,actions=controller,clear_actions\n");
    Ofdpa { flows: f, groups: g, cfg: cfg.clone(), routes, macs, acls }
}

impl Ofdpa {
    /// `n` unique routed TCP/UDP flows, each a header inside a route's prefix
    /// (and a third of them inside an ACL filter's source prefix and ports).
    pub fn traffic(&self, n: usize, rng_seed: u64) -> Vec<kairo_flow::FlowKey> {
        self.traffic_iter(rng_seed).take(n).collect()
    }

    /// The same flows as [`Ofdpa::traffic`], generated one at a time (the
    /// iterator owns what it needs; only a set of the 5-tuples it has given
    /// is kept, for uniqueness). Ends if no new flow turns up in 1000 tries.
    pub fn traffic_iter(&self, rng_seed: u64) -> impl Iterator<Item = kairo_flow::FlowKey> + Send + 'static {
        use kairo_flow::{Field, FlowKey};
        let mut rng = StdRng::seed_from_u64(rng_seed ^ 0x7af1c);
        let mut seen = crate::SeenFlows::default();
        let (routes, acls, ports) = (self.routes.clone(), self.acls.clone(), self.cfg.ports);
        std::iter::from_fn(move || {
            for _ in 0..1000 {
                let (pfx, len, _) = routes[rng.gen_range(0..routes.len())];
                let host = if len >= 32 { 0 } else { rng.gen::<u32>() & (u32::MAX >> len) };
                let dst = pfx | host;
                let mut src = rng.gen::<u32>();
                let mut proto = if rng.gen_bool(0.7) { 6u64 } else { 17 };
                let mut sport = rng.gen_range(1024..=65535u16) as u64;
                let mut dport = [80u64, 443, 53, 8080, 22][rng.gen_range(0..5)];
                if rng.gen_bool(0.33) && !acls.is_empty() {
                    let f = &acls[rng.gen_range(0..acls.len())];
                    src = f.src.0 | (rng.gen::<u32>() & !f.src.1);
                    if let Some(p) = f.proto.filter(|p| *p == 6 || *p == 17) {
                        proto = p as u64;
                    }
                    if let Some(pm) = &f.sport {
                        let (v, m) = pm.prefixes[0];
                        sport = (v | (rng.gen::<u16>() & !m)) as u64;
                    }
                    if let Some(pm) = &f.dport {
                        let (v, m) = pm.prefixes[0];
                        dport = (v | (rng.gen::<u16>() & !m)) as u64;
                    }
                }
                if !seen.insert(((src as u64) << 32) | dst as u64, (sport << 24) | (dport << 8) | proto) {
                    continue;
                }
                let port = rng.gen_range(1..=ports);
                let k = FlowKey::ipv4(port, 0x0200_0000_0100 | port as u64, ROUTER_MAC, src, dst, proto as u8)
                    .with(Field::TpSrc, sport)
                    .with(Field::TpDst, dport);
                return Some(k);
            }
            None
        })
    }

    /// An update stream: route add and withdraw, MAC moves, ACL adds and
    /// deletes, ECMP endpoint changes. Each item is (kind, command, argument).
    pub fn updates(&self, seed: &Seed, n: usize, rng_seed: u64) -> Vec<(&'static str, String, String)> {
        let mut rng = StdRng::seed_from_u64(rng_seed ^ 0x0dba);
        let mut added_routes: Vec<String> = Vec::new();
        let mut added_acls: Vec<Vec<String>> = Vec::new();
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        while out.len() < n {
            i += 1;
            match i % 6 {
                0 => {
                    let len = seed.sample(&mut rng).dst.1.count_ones().clamp(9, 32);
                    let pfx = ((10u32 << 24) | (rng.gen::<u32>() & 0x00ff_ffff)) & (u32::MAX << (32 - len));
                    let m = format!("table=30,priority={len},ip,nw_dst={}/{len}", ip(pfx));
                    let g = l3_group(rng.gen_range(0..self.cfg.next_hops));
                    out.push((
                        "route add",
                        "add-flow".into(),
                        format!("{m},actions=write_actions(group:{g}),goto_table:60"),
                    ));
                    added_routes.push(m);
                }
                1 => {
                    // Withdraw one we added, or one of the originals.
                    let m = if !added_routes.is_empty() && rng.gen_bool(0.5) {
                        added_routes.swap_remove(rng.gen_range(0..added_routes.len()))
                    } else {
                        let (p, l, _) = self.routes[rng.gen_range(0..self.routes.len())];
                        format!("table=30,priority={l},ip,nw_dst={}/{l}", ip(p))
                    };
                    out.push(("route withdraw", "--strict del-flows".into(), m));
                }
                2 => {
                    let (v, m, _) = self.macs[rng.gen_range(0..self.macs.len())];
                    let p = rng.gen_range(1..=self.cfg.ports);
                    out.push((
                        "MAC move",
                        "--strict mod-flows".into(),
                        format!(
                            "table=50,priority=100,dl_vlan={v},dl_dst={},actions=write_actions(group:{}),goto_table:60",
                            mac(m),
                            l2_group(v, p)
                        ),
                    ));
                }
                3 => {
                    let f = seed.sample(&mut rng);
                    let lines = acl_lines(&f, 60500, "clear_actions");
                    if lines.len() == 1 {
                        let l = lines[0].clone();
                        out.push(("ACL add", "add-flow".into(), l.clone()));
                        added_acls.push(lines);
                    }
                }
                4 => {
                    if let Some(lines) =
                        (!added_acls.is_empty()).then(|| added_acls.swap_remove(rng.gen_range(0..added_acls.len())))
                    {
                        let m = lines[0].split_once(",actions=").map(|(m, _)| m.to_string()).unwrap_or_default();
                        out.push(("ACL delete", "--strict del-flows".into(), m));
                    }
                }
                _ => {
                    let e = rng.gen_range(0..self.cfg.ecmp_groups);
                    let buckets: Vec<String> = (0..4)
                        .map(|_| format!("bucket=group:{}", l3_group(rng.gen_range(0..self.cfg.next_hops))))
                        .collect();
                    out.push((
                        "ECMP change",
                        "mod-group".into(),
                        format!("group_id={},type=select,{}", ecmp_group(e), buckets.join(",")),
                    ));
                }
            }
        }
        out
    }
}

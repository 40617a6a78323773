//! An Antrea-shaped pipeline (Antrea's 22 tables, registers, load/move,
//! resubmit, select groups, connection tracking), generated from a seed as
//! ovs-ofctl text, with traffic and an update stream.
//!
//! Connection tracking as Antrea's pipeline does it (its
//! docs/design/ovs-pipeline.md): every IP packet goes through
//! `ct(table=31,zone=65520,nat)`; invalid packets are dropped, packets of
//! known connections skip service selection (those of service connections,
//! `ct_mark` bit 4, marked for MAC rewrite) and the policy tables (their
//! `ct_state=-new+est` bypass); a service's first packet picks an endpoint
//! in a select group (hashed in the datapath) and is DNATed to it by
//! `ct(commit,table=45,zone=65520,nat(dst=IP:PORT),exec(...))`, which marks
//! the connection as a service's and keeps where it came from in `ct_mark`;
//! other new connections are committed in ConntrackCommit (table 105). The
//! traffic is first packets (untracked, TCP SYNs): connections are opened by
//! whoever sends them through a datapath with a connection tracker.
//!
//! One thing is still modelled: policy conjunctions are expanded into plain
//! rules. Policy rules (tables 45, 50, 85, 90) take their prefix lengths,
//! protocols and ports from a ClassBench ACL seed, placed around the pods,
//! services and remote nodes that exist (a policy selects pods).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::classbench::{Filter, Seed};

#[derive(Clone, Debug)]
pub struct AntreaConfig {
    pub pods: u32,
    pub services: u32,
    pub endpoints_per_service: u32,
    pub policies: usize,
    pub remote_nodes: u32,
}

impl Default for AntreaConfig {
    fn default() -> Self {
        AntreaConfig { pods: 400, services: 64, endpoints_per_service: 4, policies: 400, remote_nodes: 16 }
    }
}

/// Pod `i`: port 10+i, IP 10.10.x.y, MAC 02:00:0a:0a:x:y.
pub fn pod_port(i: u32) -> u32 {
    10 + i
}
pub fn pod_ip(i: u32) -> u32 {
    (10 << 24) | (10 << 16) | (i + 2)
}
pub fn pod_mac(i: u32) -> u64 {
    0x0200_0a0a_0000 | (i as u64 + 2)
}
pub fn svc_ip(i: u32) -> u32 {
    (10 << 24) | (96 << 16) | (i + 1)
}
fn ip(v: u32) -> String {
    std::net::Ipv4Addr::from(v).to_string()
}
fn mac(v: u64) -> String {
    kairo_flow::parse::format_mac(v)
}
const GW_MAC: u64 = 0x0200_0a0a_0001;
/// Antrea's conntrack zone (`CtZone`).
pub const CT_ZONE: u16 = 65520;
/// The (protocol, port) a service listens on, by service number modulo 4;
/// endpoints listen on the same port.
const SERVICE_PORTS: [(&str, u32); 4] = [("tcp", 80), ("tcp", 443), ("tcp", 8080), ("udp", 53)];
fn svc_proto(s: u32) -> &'static str {
    SERVICE_PORTS[(s % 4) as usize].0
}
fn svc_port(s: u32) -> u32 {
    SERVICE_PORTS[(s % 4) as usize].1
}
/// A service group's bucket: the endpoint's address and port, then EndpointDNAT.
fn bucket(ip: u32, port: u32) -> String {
    format!("bucket=load:{ip:#x}->NXM_NX_REG3[],load:{port:#x}->NXM_NX_REG4[0..15],resubmit(,42)")
}
const TUNNEL_PORT: u32 = 1;
const GW_PORT: u32 = 2;

#[derive(Clone, Debug)]
pub struct Antrea {
    pub flows: String,
    pub groups: String,
    pub cfg: AntreaConfig,
    /// Policy rules added, as (table, priority, match) for deletes.
    pub policy_rules: Vec<(u8, u16, String)>,
}

/// `v` masked to its first `len` bits.
fn prefix_of(v: u32, len: u32) -> u32 {
    v & kairo_flow::parse::prefix_mask(len, 32) as u32
}

/// A policy filter mapped onto the cluster, as Antrea's rules select what
/// exists: the side the policy applies to (sources in egress tables,
/// destinations in ingress ones) is a prefix around a pod that exists, the
/// peer (when the seed constrains it) one around an address the traffic
/// uses (pods, services or remote nodes for egress; pods for ingress), both
/// with the seed's prefix lengths (at least /16, so that a prefix stays in
/// its address class); protocol and destination port are the seed's.
fn policy_match(f: &Filter, cfg: &AntreaConfig, pods_side_dst: bool) -> String {
    let mut m = vec![match f.proto {
        Some(6) => "tcp".to_string(),
        Some(17) => "udp".to_string(),
        _ => "ip".to_string(),
    }];
    let (side, other) = if pods_side_dst { ("nw_dst", "nw_src") } else { ("nw_src", "nw_dst") };
    let (pv, pm) = if pods_side_dst { f.dst } else { f.src };
    let plen = pm.count_ones().max(16);
    m.push(format!("{side}={}/{plen}", ip(prefix_of(pod_ip(pv % cfg.pods), plen))));
    let (ov, om) = if pods_side_dst { f.src } else { f.dst };
    if om != 0 {
        let olen = om.count_ones().max(16);
        let peer = match (pods_side_dst, ov % 10) {
            (false, 5..=7) => svc_ip(ov % cfg.services),
            (false, 8..=9) => (10 << 24) | ((20 + ov % cfg.remote_nodes.max(1)) << 16) | (ov & 0xffff),
            _ => pod_ip(ov % cfg.pods),
        };
        m.push(format!("{other}={}/{olen}", ip(prefix_of(peer, olen))));
    }
    if matches!(f.proto, Some(6) | Some(17)) {
        let name = if f.proto == Some(6) { "tcp_dst" } else { "udp_dst" };
        if let Some(p) = f.dport.as_ref().and_then(|p| p.prefixes.first()) {
            if p.1 == 0xffff {
                m.push(format!("{name}={}", p.0));
            } else {
                m.push(format!("{name}={:#x}/{:#x}", p.0, p.1));
            }
        }
    }
    m.join(",")
}

pub fn generate(seed: &Seed, cfg: &AntreaConfig, rng_seed: u64) -> Antrea {
    let mut rng = StdRng::seed_from_u64(rng_seed);
    let mut g = String::from("# Antrea-shaped service groups (kairo workload)\n");
    for s in 0..cfg.services {
        let buckets: Vec<String> = (0..cfg.endpoints_per_service)
            .map(|e| {
                let pod = (s * 7 + e * 13) % cfg.pods;
                bucket(pod_ip(pod), svc_port(s))
            })
            .collect();
        g.push_str(&format!("group_id={},type=select,{}\n", s + 1, buckets.join(",")));
    }
    let mut f = String::from(
        "# Antrea-shaped pipeline (kairo workload), 22 tables, conntrack zone 65520.\n\
         # Modelled: policy conjunctions are expanded into plain rules.\n",
    );
    // 0 Classifier
    for i in 0..cfg.pods {
        f.push_str(&format!(
            "table=0,priority=190,in_port={},actions=load:0x2->NXM_NX_REG0[0..3],goto_table:10\n",
            pod_port(i)
        ));
    }
    f.push_str(&format!("table=0,priority=200,in_port={TUNNEL_PORT},actions=load:0x0->NXM_NX_REG0[0..3],load:0x1->NXM_NX_REG0[19],goto_table:30\n"));
    f.push_str(&format!("table=0,priority=200,in_port={GW_PORT},actions=load:0x1->NXM_NX_REG0[0..3],goto_table:10\n"));
    f.push_str("table=0,priority=0,actions=drop\n");
    // 10 SpoofGuard
    for i in 0..cfg.pods {
        f.push_str(&format!(
            "table=10,priority=200,ip,in_port={},dl_src={},nw_src={},actions=goto_table:23\n",
            pod_port(i),
            mac(pod_mac(i)),
            ip(pod_ip(i))
        ));
        f.push_str(&format!(
            "table=10,priority=200,arp,in_port={},arp_spa={},arp_sha={},actions=goto_table:20\n",
            pod_port(i),
            ip(pod_ip(i)),
            mac(pod_mac(i))
        ));
    }
    f.push_str(&format!("table=10,priority=200,ip,in_port={GW_PORT},actions=goto_table:23\n"));
    f.push_str("table=10,priority=0,actions=drop\n");
    // 20 ARPResponder
    f.push_str(&format!("table=20,priority=200,arp,arp_op=1,arp_tpa=10.10.0.1,actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],mod_dl_src:{},load:0x2->NXM_OF_ARP_OP[],IN_PORT\n", mac(GW_MAC)));
    f.push_str("table=20,priority=190,arp,actions=goto_table:80\n");
    // 23 ServiceHairpin, 30 ConntrackZone, 31 ConntrackState
    f.push_str("table=23,priority=0,actions=goto_table:30\n");
    f.push_str(&format!("table=30,priority=200,ip,actions=ct(table=31,zone={CT_ZONE},nat)\n"));
    f.push_str("table=30,priority=0,actions=goto_table:31\n");
    f.push_str("table=31,priority=200,ct_state=+inv+trk,ip,actions=drop\n");
    f.push_str("table=31,priority=190,ct_state=-new+trk,ct_mark=0/0x10,ip,actions=goto_table:45\n");
    f.push_str(
        "table=31,priority=190,ct_state=-new+trk,ct_mark=0x10/0x10,ip,actions=load:0x1->NXM_NX_REG0[9],goto_table:45\n",
    );
    f.push_str("table=31,priority=0,actions=goto_table:40\n");
    // 40 SessionAffinity (marks the packet for endpoint selection), 41 ServiceLB, 42 EndpointDNAT
    f.push_str("table=40,priority=0,actions=load:0x1->NXM_NX_REG4[16..18],goto_table:41\n");
    for s in 0..cfg.services {
        let (proto, port) = (svc_proto(s), svc_port(s));
        f.push_str(&format!(
            "table=41,priority=200,{proto},reg4=0x10000/0x70000,nw_dst={},tp_dst={port},actions=load:0x1->NXM_NX_REG0[9],load:0x2->NXM_NX_REG4[16..18],group:{}\n",
            ip(svc_ip(s)),
            s + 1
        ));
    }
    f.push_str("table=41,priority=0,actions=goto_table:42\n");
    // An endpoint's DNAT for each port a service uses (endpoints are drawn
    // from every pod, and the update stream moves them).
    for i in 0..cfg.pods {
        for (proto, port) in SERVICE_PORTS {
            f.push_str(&format!(
                "table=42,priority=200,{proto},reg3={:#x},reg4={:#x}/0x7ffff,actions=ct(commit,table=45,zone={CT_ZONE},nat(dst={}:{port}),exec(load:0x1->NXM_NX_CT_MARK[4],move:NXM_NX_REG0[0..3]->NXM_NX_CT_MARK[0..3]))\n",
                pod_ip(i),
                0x20000 | port,
                ip(pod_ip(i)),
            ));
        }
    }
    f.push_str("table=42,priority=0,actions=goto_table:45\n");
    // 45 AntreaPolicyEgress, 50 EgressRule, 60 EgressDefault: policies from the seed.
    let mut policy_rules = Vec::new();
    let policy = |rng: &mut StdRng,
                  t: u8,
                  dst_side: bool,
                  action: &str,
                  prio: u16,
                  f: &mut String,
                  rules: &mut Vec<(u8, u16, String)>| {
        // A rule with the same table, priority and match would replace the
        // earlier one (in Open vSwitch too): draw until it is new.
        for _ in 0..100 {
            let m = policy_match(&seed.sample(rng), cfg, dst_side);
            if !rules.iter().any(|(rt, rp, rm)| (*rt, *rp) == (t, prio) && *rm == m) {
                f.push_str(&format!("table={t},priority={prio},{m},actions={action}\n"));
                rules.push((t, prio, m));
                return;
            }
        }
    };
    // Packets of established and related connections skip policy (as
    // Antrea's EgressMetric would, they go on to L3Forwarding).
    f.push_str("table=45,priority=64990,ct_state=-new+est,ip,actions=goto_table:70\n");
    f.push_str("table=45,priority=64990,ct_state=-new+rel,ip,actions=goto_table:70\n");
    for i in 0..cfg.policies / 4 {
        let a = if rng.gen_bool(0.3) { "drop" } else { "goto_table:60" };
        policy(&mut rng, 45, false, a, 14000 - i as u16, &mut f, &mut policy_rules);
        policy(&mut rng, 50, false, "load:0x1->NXM_NX_REG0[20],goto_table:70", 200, &mut f, &mut policy_rules);
    }
    f.push_str("table=45,priority=0,actions=goto_table:50\n");
    f.push_str("table=50,priority=0,actions=goto_table:60\n");
    for i in 0..cfg.pods / 8 {
        f.push_str(&format!("table=60,priority=200,ip,reg0=0x0/0x100000,nw_src={},actions=drop\n", ip(pod_ip(i * 8))));
    }
    f.push_str("table=60,priority=0,actions=goto_table:70\n");
    // 70 L3Forwarding: replies to connections the gateway opened go back
    // to it; local pods; remote nodes through the tunnel.
    f.push_str(&format!(
        "table=70,priority=210,ct_state=+rpl+trk,ct_mark=0x1/0xf,ip,actions=mod_dl_dst:{},goto_table:71\n",
        mac(GW_MAC)
    ));
    for i in 0..cfg.pods {
        f.push_str(&format!(
            "table=70,priority=200,ip,nw_dst={},actions=mod_dl_src:{},mod_dl_dst:{},goto_table:71\n",
            ip(pod_ip(i)),
            mac(GW_MAC),
            mac(pod_mac(i))
        ));
    }
    for n in 0..cfg.remote_nodes {
        f.push_str(&format!(
            "table=70,priority=190,ip,nw_dst=10.{}.0.0/16,actions=mod_dl_dst:aa:bb:cc:dd:ee:ff,load:{:#x}->NXM_NX_TUN_IPV4_DST[],load:0x1->NXM_NX_REG1[],goto_table:71\n",
            20 + n,
            (192u32 << 24) | (168 << 16) | (n + 10)
        ));
    }
    f.push_str(&format!("table=70,priority=0,actions=load:{GW_PORT}->NXM_NX_REG1[],goto_table:71\n"));
    // 71 SNAT, 72 L3DecTTL
    f.push_str("table=71,priority=0,actions=goto_table:72\n");
    f.push_str("table=72,priority=210,ip,reg0=0x1/0xf,actions=goto_table:80\n");
    f.push_str("table=72,priority=200,ip,actions=dec_ttl,goto_table:80\n");
    // 80 L2ForwardingCalc
    for i in 0..cfg.pods {
        f.push_str(&format!(
            "table=80,priority=200,dl_dst={},actions=load:{}->NXM_NX_REG1[],load:0x1->NXM_NX_REG0[16],goto_table:85\n",
            mac(pod_mac(i)),
            pod_port(i)
        ));
    }
    f.push_str("table=80,priority=0,actions=load:0x1->NXM_NX_REG0[16],goto_table:85\n");
    // 85 AntreaPolicyIngress, 90 IngressRule, 100 IngressDefault
    f.push_str("table=85,priority=64990,ct_state=-new+est,ip,actions=goto_table:105\n");
    f.push_str("table=85,priority=64990,ct_state=-new+rel,ip,actions=goto_table:105\n");
    for i in 0..cfg.policies / 4 {
        let a = if rng.gen_bool(0.3) { "drop" } else { "goto_table:100" };
        policy(&mut rng, 85, true, a, 14000 - i as u16, &mut f, &mut policy_rules);
        policy(&mut rng, 90, true, "load:0x1->NXM_NX_REG0[20],goto_table:105", 200, &mut f, &mut policy_rules);
    }
    f.push_str("table=85,priority=0,actions=goto_table:90\n");
    f.push_str("table=90,priority=0,actions=goto_table:100\n");
    for i in 0..cfg.pods / 8 {
        f.push_str(&format!(
            "table=100,priority=200,ip,reg0=0x0/0x100000,nw_dst={},actions=drop\n",
            ip(pod_ip(i * 8 + 1))
        ));
    }
    f.push_str("table=100,priority=0,actions=goto_table:105\n");
    // 105 ConntrackCommit (new connections that are not a service's; those
    // were committed with their DNAT), 108 HairpinSNAT, 110 L2ForwardingOut
    f.push_str(&format!("table=105,priority=200,ct_state=+new+trk-snat,ct_mark=0/0x10,ip,actions=ct(commit,table=108,zone={CT_ZONE},exec(move:NXM_NX_REG0[0..3]->NXM_NX_CT_MARK[0..3]))\n"));
    f.push_str("table=105,priority=0,actions=goto_table:108\n");
    f.push_str("table=108,priority=0,actions=goto_table:110\n");
    for p in [TUNNEL_PORT, GW_PORT].into_iter().chain((0..cfg.pods).map(pod_port)) {
        f.push_str(&format!("table=110,priority=200,reg0=0x10000/0x10000,reg1={p},actions=output:{p}\n"));
    }
    f.push_str("table=110,priority=0,actions=drop\n");
    Antrea { flows: f, groups: g, cfg: cfg.clone(), policy_rules }
}

impl Antrea {
    /// The first packets of `n` unique connections from local pods: to other
    /// pods, to services and to remote nodes.
    pub fn traffic(&self, n: usize, rng_seed: u64) -> Vec<kairo_flow::FlowKey> {
        self.traffic_iter(rng_seed).take(n).collect()
    }

    /// The same flows as [`Antrea::traffic`], one at a time (only a set of
    /// what it has given is kept). Ends if no new flow turns up in 1000 tries.
    pub fn traffic_iter(&self, rng_seed: u64) -> impl Iterator<Item = kairo_flow::FlowKey> + Send + 'static {
        use kairo_flow::{Field, FlowKey};
        let mut rng = StdRng::seed_from_u64(rng_seed ^ 0xa17e);
        let mut seen = crate::SeenFlows::default();
        let cfg = self.cfg.clone();
        std::iter::from_fn(move || {
            for _ in 0..1000 {
                let src = rng.gen_range(0..cfg.pods);
                let (dst_ip, proto, dport) = match rng.gen_range(0..10) {
                    0..=4 => {
                        (pod_ip(rng.gen_range(0..cfg.pods)), 6u64, [80u64, 443, 8080, 22, 5432][rng.gen_range(0..5)])
                    }
                    5..=7 => {
                        let s = rng.gen_range(0..cfg.services);
                        (svc_ip(s), if svc_proto(s) == "udp" { 17 } else { 6 }, u64::from(svc_port(s)))
                    }
                    _ => (
                        (10 << 24) | ((20 + rng.gen_range(0..cfg.remote_nodes)) << 16) | rng.gen_range(1..65535u32),
                        17,
                        53,
                    ),
                };
                let sport = rng.gen_range(1024..=65535u16) as u64;
                if !seen.insert(((src as u64) << 32) | dst_ip as u64, (sport << 24) | (dport << 8) | proto) {
                    continue;
                }
                // A connection's first packet: untracked, a SYN for TCP.
                let flags = if proto == 6 { 0x002 } else { 0 };
                let k = FlowKey::ipv4(pod_port(src), pod_mac(src), GW_MAC, pod_ip(src), dst_ip, proto as u8)
                    .with(Field::TpSrc, sport)
                    .with(Field::TpDst, dport)
                    .with(Field::TcpFlags, flags);
                return Some(k);
            }
            None
        })
    }

    /// Network-policy rule adds and deletes, service endpoint changes, pod
    /// arrivals and departures in L2ForwardingCalc.
    pub fn updates(&self, seed: &Seed, n: usize, rng_seed: u64) -> Vec<(&'static str, String, String)> {
        let mut rng = StdRng::seed_from_u64(rng_seed ^ 0x90c1);
        let mut added: Vec<(u8, u16, String)> = Vec::new();
        let mut out = Vec::with_capacity(n);
        let mut i = 0u32;
        while out.len() < n {
            i += 1;
            match i % 5 {
                0 | 1 => {
                    let t = if rng.gen_bool(0.5) { 45u8 } else { 85 };
                    let m = policy_match(&seed.sample(&mut rng), &self.cfg, t == 85);
                    let prio = 14500 + (i % 100) as u16;
                    out.push(("policy add", "add-flow".into(), format!("table={t},priority={prio},{m},actions=drop")));
                    added.push((t, prio, m));
                }
                2 => {
                    let (t, p, m) = if !added.is_empty() && rng.gen_bool(0.5) {
                        added.swap_remove(rng.gen_range(0..added.len()))
                    } else {
                        self.policy_rules[rng.gen_range(0..self.policy_rules.len())].clone()
                    };
                    out.push(("policy delete", "--strict del-flows".into(), format!("table={t},priority={p},{m}")));
                }
                3 => {
                    let s = rng.gen_range(0..self.cfg.services);
                    let buckets: Vec<String> = (0..self.cfg.endpoints_per_service)
                        .map(|_| bucket(pod_ip(rng.gen_range(0..self.cfg.pods)), svc_port(s)))
                        .collect();
                    out.push((
                        "endpoint change",
                        "mod-group".into(),
                        format!("group_id={},type=select,{}", s + 1, buckets.join(",")),
                    ));
                }
                _ => {
                    let p = rng.gen_range(0..self.cfg.pods);
                    out.push((
                        "pod move",
                        "--strict mod-flows".into(),
                        format!("table=80,priority=200,dl_dst={},actions=load:{}->NXM_NX_REG1[],load:0x1->NXM_NX_REG0[16],goto_table:85", mac(pod_mac(p)), pod_port(rng.gen_range(0..self.cfg.pods))),
                    ));
                }
            }
        }
        out
    }
}

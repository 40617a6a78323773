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
//! Policy rules are conjunctive flows, as Antrea writes them: each rule of
//! the policy tables (45 and 85 for Antrea-native policies, one priority a
//! rule; 50 and 90 for Kubernetes NetworkPolicies, all at priority 200,
//! where a clause flow two rules share carries both their conjunction
//! actions) is a `conjunction(id,k/n)` clause flow per member of each of its
//! dimensions (the pods it applies to, its peers, its ports) and a
//! `conj_id=id` flow with its action. The members take their prefix
//! lengths, protocols and ports from a ClassBench ACL seed, placed around
//! the pods, services and remote nodes that exist (a policy selects pods).

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
    /// Seed filters a policy rule is drawn from at most (its members, a
    /// few per dimension).
    pub members: usize,
}

impl Default for AntreaConfig {
    fn default() -> Self {
        AntreaConfig { pods: 400, services: 64, endpoints_per_service: 4, policies: 400, remote_nodes: 16, members: 4 }
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
    /// The Antrea-native policy rules (tables 45 and 85), for the updates
    /// that change them.
    pub policy_rules: Vec<PolicyRule>,
}

/// One policy rule as conjunctive flows: its table, priority, conjunction
/// id (also its flows' cookie) and the match of each clause flow with its
/// dimension (1-based) of the `n`.
#[derive(Clone, Debug)]
pub struct PolicyRule {
    pub table: u8,
    pub priority: u16,
    pub id: u32,
    pub n: u8,
    /// What each dimension is (0: the pods, 1: the peers, 2: the ports).
    pub kinds: Vec<u8>,
    pub members: Vec<(u8, String)>,
}

/// The members of a policy rule drawn from `k` seed filters, by dimension:
/// the pods it applies to (the destination side in ingress tables), its
/// peers (when the seed constrains them) and its ports (for TCP and UDP
/// filters with one), empty where no filter constrains it. Each member is
/// a whole match (protocol included).
fn policy_dims(seed: &Seed, rng: &mut StdRng, k: usize, cfg: &AntreaConfig, ingress: bool) -> [Vec<String>; 3] {
    let (side, other) = if ingress { ("nw_dst", "nw_src") } else { ("nw_src", "nw_dst") };
    let mut dims: [Vec<String>; 3] = Default::default();
    for _ in 0..k {
        let f = seed.sample(rng);
        let m = policy_match(&f, cfg, ingress);
        for part in m.split(',') {
            let d = if part.starts_with(side) {
                0
            } else if part.starts_with(other) {
                1
            } else if part.starts_with("tcp_dst") || part.starts_with("udp_dst") {
                2
            } else {
                continue;
            };
            let proto = match d {
                2 if part.starts_with("tcp") => "tcp",
                2 => "udp",
                _ => "ip",
            };
            let member = format!("{proto},{part}");
            if !dims[d].contains(&member) {
                dims[d].push(member);
            }
        }
    }
    dims
}

/// Policy flows being written: (table, priority, match) and their actions.
type PolicyFlows = Vec<((u8, u16, String), Vec<String>)>;

/// Writes a policy rule's flows: a clause flow per member (one that is
/// there already at this table and priority gets this conjunction action
/// too), and the `conj_id` flow with `action`. A rule of one dimension
/// needs no conjunction: its members are plain flows with the action.
fn put_policy(
    flows: &mut PolicyFlows,
    t: u8,
    prio: u16,
    id: u32,
    all: &[Vec<String>; 3],
    action: &str,
) -> Option<PolicyRule> {
    let kinds: Vec<u8> = (0..3u8).filter(|&d| !all[usize::from(d)].is_empty()).collect();
    let dims: Vec<&Vec<String>> = kinds.iter().map(|&d| &all[usize::from(d)]).collect();
    if dims.len() < 2 {
        for m in dims.into_iter().flatten() {
            let key = (t, prio, m.clone());
            if !flows.iter().any(|(x, _)| *x == key) {
                flows.push((key, vec![action.to_string()]));
            }
        }
        return None;
    }
    let n = dims.len() as u8;
    let mut members = Vec::new();
    for (k, d) in dims.iter().enumerate() {
        for m in d.iter() {
            let a = format!("conjunction({id},{}/{n})", k + 1);
            let key = (t, prio, m.clone());
            match flows.iter_mut().find(|(x, _)| *x == key) {
                Some((_, acts)) => acts.push(a),
                None => flows.push((key, vec![a])),
            }
            members.push((k as u8 + 1, m.clone()));
        }
    }
    flows.push(((t, prio, format!("conj_id={id},ip")), vec![action.to_string()]));
    Some(PolicyRule { table: t, priority: prio, id, n, kinds, members })
}

/// The flow lines of [`put_policy`]'s flows, with `cookie` (an
/// Antrea-native rule's conjunction id; 0 for shared flows).
fn policy_lines(flows: &PolicyFlows, cookie: impl Fn(&str, &[String]) -> u32) -> String {
    let mut out = String::new();
    for ((t, prio, m), acts) in flows {
        let c = cookie(m, acts);
        out.push_str(&format!("table={t},priority={prio},cookie={c:#x},{m},actions={}\n", acts.join(",")));
    }
    out
}

/// The conjunction a native rule's flow belongs to: a clause flow's only
/// conjunction action, or the `conj_id` it matches (0 for other flows and
/// clause flows of several rules).
fn rule_cookie(m: &str, acts: &[String]) -> u32 {
    if let Some(id) = m.strip_prefix("conj_id=").and_then(|r| r.split(',').next()) {
        return id.parse().unwrap_or(0);
    }
    match acts {
        [a] => {
            a.strip_prefix("conjunction(").and_then(|r| r.split(',').next()).and_then(|v| v.parse().ok()).unwrap_or(0)
        }
        _ => 0,
    }
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
    let mut f = String::from("# Antrea-shaped pipeline (kairo workload), 22 tables, conntrack zone 65520.\n");
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
    // (ARP not for the gateway goes to the bridge's learning switch, as
    // Antrea's ARPResponder sends it.)
    f.push_str("table=20,priority=190,arp,actions=NORMAL\n");
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
    // 45 AntreaPolicyEgress, 50 EgressRule, 60 EgressDefault: policies
    // from the seed, as conjunctive flows (ids from 1, one a rule).
    let mut policy_rules = Vec::new();
    let mut next_id = 1u32;
    let mut policy = |rng: &mut StdRng, t: u8, action: &str, prio: u16, flows: &mut Vec<_>| {
        let k = rng.gen_range(1..=cfg.members.max(1));
        let dims = policy_dims(seed, rng, k, cfg, t >= 85);
        next_id += 1;
        put_policy(flows, t, prio, next_id - 1, &dims, action)
    };
    // Packets of established and related connections skip policy (as
    // Antrea's EgressMetric would, they go on to L3Forwarding).
    f.push_str("table=45,priority=64990,ct_state=-new+est,ip,actions=goto_table:70\n");
    f.push_str("table=45,priority=64990,ct_state=-new+rel,ip,actions=goto_table:70\n");
    let mut flows = Vec::new();
    for i in 0..cfg.policies / 4 {
        let a = if rng.gen_bool(0.3) { "drop" } else { "goto_table:60" };
        policy_rules.extend(policy(&mut rng, 45, a, 14000 - i as u16, &mut flows));
        policy(&mut rng, 50, "load:0x1->NXM_NX_REG0[20],goto_table:70", 200, &mut flows);
    }
    f.push_str(&policy_lines(&flows, rule_cookie));
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
    let mut flows = Vec::new();
    for i in 0..cfg.policies / 4 {
        let a = if rng.gen_bool(0.3) { "drop" } else { "goto_table:100" };
        policy_rules.extend(policy(&mut rng, 85, a, 14000 - i as u16, &mut flows));
        policy(&mut rng, 90, "load:0x1->NXM_NX_REG0[20],goto_table:105", 200, &mut flows);
    }
    f.push_str(&policy_lines(&flows, rule_cookie));
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
    /// The bridge's OpenFlow ports: the tunnel, the gateway and every pod's
    /// (what NORMAL and FLOOD send to).
    pub fn ports(&self) -> Vec<u32> {
        [TUNNEL_PORT, GW_PORT].into_iter().chain((0..self.cfg.pods).map(pod_port)).collect()
    }

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

    /// Network-policy changes (a rule added or deleted whole, a member
    /// added to or taken from a rule's dimension: a pod, a peer or a port
    /// joining or leaving the sets a rule names), service endpoint changes,
    /// pod arrivals and departures in L2ForwardingCalc. A rule added whole
    /// is one `add-flows` of its flows (a bundle); one deleted, a
    /// `del-flows` of its cookie.
    pub fn updates(&self, seed: &Seed, n: usize, rng_seed: u64) -> Vec<(&'static str, String, String)> {
        let mut rng = StdRng::seed_from_u64(rng_seed ^ 0x90c1);
        let mut rules: Vec<PolicyRule> = self.policy_rules.clone();
        let mut next_id = 1_000_000u32;
        let mut out = Vec::with_capacity(n);
        let mut i = 0u32;
        while out.len() < n {
            i += 1;
            match i % 6 {
                0 => {
                    let t = if rng.gen_bool(0.5) { 45u8 } else { 85 };
                    let prio = 15000 + (i % 30000) as u16;
                    let mut flows = Vec::new();
                    let k = rng.gen_range(2..=self.cfg.members.max(2));
                    let dims = policy_dims(seed, &mut rng, k, &self.cfg, t == 85);
                    let Some(r) = put_policy(&mut flows, t, prio, next_id, &dims, "drop") else { continue };
                    next_id += 1;
                    let lines = policy_lines(&flows, rule_cookie);
                    out.push(("policy add", "add-flows".into(), lines.trim_end().to_string()));
                    rules.push(r);
                }
                1 | 2 if !rules.is_empty() => {
                    let j = rng.gen_range(0..rules.len());
                    let r = &mut rules[j];
                    if i % 6 == 1 {
                        // A new member of one dimension.
                        let k = rng.gen_range(0..usize::from(r.n));
                        let kind = usize::from(r.kinds[k]);
                        let drawn = (0..8).find_map(|_| {
                            let d = policy_dims(seed, &mut rng, 1, &self.cfg, r.table == 85);
                            d[kind].first().cloned()
                        });
                        let Some(m) = drawn else { continue };
                        if r.members.iter().any(|(_, x)| *x == m) {
                            continue;
                        }
                        let line = format!(
                            "table={},priority={},cookie={:#x},{m},actions=conjunction({},{}/{})",
                            r.table,
                            r.priority,
                            r.id,
                            r.id,
                            k + 1,
                            r.n
                        );
                        r.members.push((k as u8 + 1, m));
                        out.push(("member add", "add-flow".into(), line));
                    } else {
                        // A member leaves (never a dimension's last).
                        let k = rng.gen_range(0..r.members.len());
                        let dim = r.members[k].0;
                        if r.members.iter().filter(|(d, _)| *d == dim).count() < 2 {
                            continue;
                        }
                        let (_, m) = r.members.swap_remove(k);
                        out.push((
                            "member delete",
                            "--strict del-flows".into(),
                            format!("table={},priority={},{m}", r.table, r.priority),
                        ));
                    }
                }
                3 if !rules.is_empty() => {
                    let r = rules.swap_remove(rng.gen_range(0..rules.len()));
                    out.push((
                        "policy delete",
                        "del-flows".into(),
                        format!("table={},cookie={:#x}/0xffffffffffffffff", r.table, r.id),
                    ));
                }
                1..=3 => continue,
                4 => {
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

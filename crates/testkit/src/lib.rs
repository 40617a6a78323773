//! Random pipelines and packets for property and differential tests.
//!
//! Everything is generated as ovs-ofctl text (flow lines, group lines, packet
//! specs), so the same case loads into kairo and into real Open vSwitch.
//! Invariant: generation is a pure function of the seed and the [`GenConfig`];
//! every generated flow and group parses.

pub mod alloc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What the generator may use.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Tables 0..n_tables.
    pub n_tables: u8,
    pub rules_per_table: std::ops::Range<usize>,
    /// Allow resubmit (which can loop; translation then stops at the depth limit).
    pub resubmit: bool,
    /// Allow select groups (hashed in the datapath by kairo and Open vSwitch
    /// alike: the bucket follows from dp_hash, which each computes its own way).
    pub multi_bucket_select: bool,
    /// Table-miss `continue` directives.
    pub miss_continue: bool,
    /// Unique priorities per table (equal-priority overlaps are unspecified in
    /// Open vSwitch, so differential tests avoid them).
    pub unique_priorities: bool,
    /// Output ports are 1..=n_ports.
    pub n_ports: u32,
    /// Connection tracking: `ct(...)` actions (zones, commit, mark and
    /// label, NAT, resuming at a table), `ct_clear`, and matches on the
    /// ct fields.
    pub conntrack: bool,
    /// `write_actions(...)` instructions (Open vSwitch 3.1 aborts on a
    /// `ct(table=N)` run while the action set is not empty, so a
    /// differential test against it keeps the two apart).
    pub write_actions: bool,
    /// Conjunctive matches: per table, now and then a conjunctive flow of
    /// 2 or 3 dimensions (`conjunction(id,k/n)` clauses) with its
    /// `conj_id=id` flow (sometimes missing, sometimes narrower than the
    /// clauses), and now and then a second one at the same priority
    /// sharing a clause flow (which then has two conjunction actions).
    pub conjunction: bool,
    /// `NORMAL` (the learning switch) among the outputs.
    pub normal: bool,
    /// `push` and `pop` of register and Ethernet bits (the stack).
    pub stack: bool,
    /// `learn(...)` into any table: flows matching a MAC or an address
    /// the packet had, loading reg0's low bits or outputting to the port a
    /// field holds, now and then under a limit whose result bit (reg0's
    /// bit 2) later matches read, with fin timeouts, or with
    /// delete_learned; and `fin_timeout` on TCP flows.
    pub learn: bool,
    /// `check_pkt_larger(LEN)->NXM_NX_REG0[0 or 1]` (LEN 64, 128 or 1500):
    /// what follows it in the list runs for longer and for shorter packets
    /// (reg0's low bits are what some matches read).
    pub check_len: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            n_tables: 4,
            rules_per_table: 3..10,
            resubmit: true,
            multi_bucket_select: true,
            miss_continue: true,
            unique_priorities: false,
            n_ports: 4,
            conntrack: true,
            write_actions: true,
            conjunction: true,
            normal: true,
            stack: true,
            learn: true,
            check_len: true,
        }
    }
}

/// A generated case: flow file text, group file text.
#[derive(Clone, Debug)]
pub struct Case {
    pub flows: String,
    pub groups: String,
}

/// Small value pools, so that rules overlap and packets hit them.
const NETS: [&str; 5] = ["10.0.0.0", "10.0.1.0", "10.1.0.0", "192.168.0.0", "172.16.5.0"];
const MACS: [&str; 4] = ["00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:aa:01", "02:00:00:00:00:09"];
const PORTS_L4: [u16; 5] = [22, 53, 80, 443, 8080];
const NETS6: [&str; 4] = ["2001:db8::", "2001:db8:0:1::", "fd00:1::", "fe80::"];

fn pick<'a, T>(rng: &mut StdRng, xs: &'a [T]) -> &'a T {
    xs.choose(rng).unwrap_or(&xs[0])
}

fn addr_in(rng: &mut StdRng, net: &str) -> String {
    let base: std::net::Ipv4Addr = net.parse().unwrap_or(std::net::Ipv4Addr::new(10, 0, 0, 0));
    let v = u32::from(base) | rng.gen_range(0..512);
    std::net::Ipv4Addr::from(v).to_string()
}

fn rand_addr(rng: &mut StdRng) -> String {
    let net = *pick(rng, &NETS);
    addr_in(rng, net)
}

fn addr6_in(rng: &mut StdRng, net: &str) -> String {
    let base: std::net::Ipv6Addr = net.parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED);
    let v = u128::from(base) | rng.gen_range(0..512u128);
    std::net::Ipv6Addr::from(v).to_string()
}

fn rand_addr6(rng: &mut StdRng) -> String {
    let net = *pick(rng, &NETS6);
    addr6_in(rng, net)
}

const V4: [&str; 4] = ["ip", "tcp", "udp", "icmp"];
const V6: [&str; 4] = ["ipv6", "tcp6", "udp6", "icmp6"];

/// A random match: a protocol, then fields valid for it.
fn gen_match(rng: &mut StdRng, cfg: &GenConfig) -> String {
    let mut parts: Vec<String> = Vec::new();
    if rng.gen_bool(0.3) {
        parts.push(format!("in_port={}", rng.gen_range(1..=cfg.n_ports)));
    }
    let proto = *pick(rng, &["", "ip", "tcp", "udp", "icmp", "arp", "ipv6", "tcp6", "udp6", "icmp6", "mpls"]);
    if !proto.is_empty() {
        parts.push(proto.to_string());
    }
    if rng.gen_bool(0.15) {
        parts.push(format!("reg0={:#x}/{:#x}", rng.gen_range(0..4), *pick(rng, &[0x1, 0x3, 0xf])));
    }
    if rng.gen_bool(0.15) {
        parts.push(format!("dl_dst={}", pick(rng, &MACS)));
    }
    if rng.gen_bool(0.1) {
        parts.push(format!("dl_vlan={}", rng.gen_range(1..4)));
    }
    if cfg.conntrack {
        if rng.gen_bool(0.25) {
            let st = *pick(
                rng,
                &["-trk", "+trk", "+trk+new", "+trk+est", "+trk+est+rpl", "+trk-new", "+new-est", "+inv+trk"],
            );
            parts.push(format!("ct_state={st}"));
        }
        if rng.gen_bool(0.08) {
            parts.push(format!("ct_zone={}", pick(rng, &[0, 1, 5])));
        }
        if rng.gen_bool(0.08) {
            parts.push(format!("ct_mark={:#x}/0xf", rng.gen_range(0..3)));
        }
        if rng.gen_bool(0.05) {
            parts.push("ct_label=0x1/0x1".into());
        }
    }
    if matches!(proto, "ip" | "tcp" | "udp" | "icmp") {
        if rng.gen_bool(0.5) {
            let plen = *pick(rng, &[8, 16, 23, 24, 32]);
            let net = pick(rng, &NETS);
            let a = if plen == 32 { addr_in(rng, net) } else { net.to_string() };
            parts.push(format!("nw_dst={a}/{plen}"));
        }
        if rng.gen_bool(0.3) {
            parts.push(format!("nw_src={}/{}", pick(rng, &NETS), pick(rng, &[8, 16, 24])));
        }
        if rng.gen_bool(0.1) {
            parts.push(format!("nw_ttl={}", rng.gen_range(0..3)));
        }
    }
    if V6.contains(&proto) {
        if rng.gen_bool(0.5) {
            let plen = *pick(rng, &[32, 48, 64, 120, 128]);
            let net = pick(rng, &NETS6);
            let a = if plen == 128 { addr6_in(rng, net) } else { net.to_string() };
            parts.push(format!("ipv6_dst={a}/{plen}"));
        }
        if rng.gen_bool(0.3) {
            parts.push(format!("ipv6_src={}/{}", pick(rng, &NETS6), pick(rng, &[16, 48, 64])));
        }
        if rng.gen_bool(0.1) {
            parts.push(format!("nw_ttl={}", rng.gen_range(0..3)));
        }
        if rng.gen_bool(0.1) {
            parts.push(format!("ipv6_label={:#x}", rng.gen_range(0..2)));
        }
    }
    if proto == "icmp6" && rng.gen_bool(0.4) {
        let ty = *pick(rng, &[128, 135, 136]);
        parts.push(format!("icmp_type={ty}"));
        if ty != 128 && rng.gen_bool(0.5) {
            parts.push(format!("nd_target={}", rand_addr6(rng)));
        }
    }
    if matches!(proto, "tcp" | "udp" | "tcp6" | "udp6") {
        let (src, dst) = if proto.starts_with("tcp") { ("tcp_src", "tcp_dst") } else { ("udp_src", "udp_dst") };
        if rng.gen_bool(0.5) {
            parts.push(format!("{dst}={}", pick(rng, &PORTS_L4)));
        }
        if rng.gen_bool(0.2) {
            parts.push(format!("{src}={:#x}/0xff00", rng.gen_range(0..4) << 8));
        }
    }
    if proto == "icmp" && rng.gen_bool(0.4) {
        parts.push(format!("icmp_type={}", pick(rng, &[0, 8])));
    }
    if proto == "arp" && rng.gen_bool(0.5) {
        parts.push(format!("arp_op={}", rng.gen_range(1..3)));
    }
    if proto == "mpls" {
        if rng.gen_bool(0.6) {
            parts.push(format!("mpls_label={}", rng.gen_range(0..4)));
        }
        if rng.gen_bool(0.2) {
            parts.push(format!("mpls_tc={}", rng.gen_range(0..2)));
        }
        if rng.gen_bool(0.2) {
            parts.push(format!("mpls_bos={}", rng.gen_range(0..2)));
        }
        if rng.gen_bool(0.1) {
            parts.push(format!("mpls_ttl={}", rng.gen_range(0..3)));
        }
    }
    parts.join(",")
}

/// A random action valid for packets of the match's protocol.
/// Only actions whose prerequisites the match (and earlier actions) guarantee,
/// as OpenFlow 1.1+ requires (`pop_vlan` needs a tag, `mod_tp_dst` needs tcp/udp).
fn gen_action(rng: &mut StdRng, cfg: &GenConfig, m: &str, table: u8, groups: &[u32], st: &mut ActState) -> String {
    // Under labels pushed by an earlier action, or after a pop, the L3
    // header is not the match's (OVS refuses L3 actions there), but the one
    // the pop's ethertype names (what follows waits for a recirculation).
    let l3 = !st.pushed && !st.popped;
    let (match_ip, match_ip6) = (
        l3 && V4.iter().any(|p| m.split(',').any(|x| x == *p)),
        l3 && V6.iter().any(|p| m.split(',').any(|x| x == *p)),
    );
    let is_ip = match_ip || st.popped_to == 4;
    let is_ip6 = match_ip6 || st.popped_to == 6;
    let l4 = l3 && m.split(',').any(|x| matches!(x, "tcp" | "udp" | "tcp6" | "udp6"));
    let mpls = !st.popped && (st.pushed || m.split(',').any(|x| x == "mpls"));
    let before = st.clone();
    let has_vlan = &mut st.has_vlan;
    loop {
        // (Without check_pkt_larger, the same draws as before it was added.)
        let a = match rng.gen_range(0..if cfg.check_len { 27 } else { 26 }) {
            26 if cfg.check_len => {
                format!("check_pkt_larger({})->NXM_NX_REG0[{}]", pick(rng, &[64, 128, 1500]), rng.gen_range(0..2))
            }
            // A clone of one to three actions (no ct, which kairo refuses
            // there, but now and then ct_clear first; and no MPLS push or pop, whose effect on later
            // actions' prerequisites Open vSwitch's checks carry out of
            // the clone): what it does to the packet is undone after it.
            24 => {
                let inner = GenConfig { conntrack: false, ..cfg.clone() };
                let mut body = Vec::new();
                let mut s = before.clone();
                for _ in 0..rng.gen_range(1..=3) {
                    // (What a left-out action did to the packet is left out too.)
                    let mut after = s.clone();
                    let a = gen_action(rng, &inner, m, table, groups, &mut after);
                    if !a.contains("mpls") && !a.starts_with("clone") {
                        body.push(a);
                        s = after;
                    }
                }
                if body.is_empty() {
                    continue;
                }
                // ct_clear runs in line (Open vSwitch's clone does too); ct
                // would need the datapath's clone.
                if cfg.conntrack && rng.gen_bool(0.3) {
                    body.insert(0, "ct_clear".to_string());
                }
                format!("clone({})", body.join(","))
            }
            25 if cfg.learn && rng.gen_bool(0.5) => gen_learn(rng, cfg, match_ip),
            // (Open vSwitch takes fin_timeout over OpenFlow 1.1+ only on TCP flows.)
            25 if cfg.learn && m.split(',').any(|x| x == "tcp" || x == "tcp6") => {
                "fin_timeout(idle_timeout=5,hard_timeout=30)".to_string()
            }
            // OVN's clone(ct_clear,...): an output of the packet untracked,
            // the pipeline's own tracked state kept.
            23 if cfg.conntrack && rng.gen_bool(0.3) => {
                format!("clone(ct_clear,output:{})", rng.gen_range(1..=cfg.n_ports))
            }
            // (kairo checks ct against the match alone, not what a pop left.)
            21..=23 if cfg.conntrack && (match_ip || match_ip6) => {
                gen_ct(rng, cfg, table, match_ip, l4, m.contains("+inv"))
            }
            21 if cfg.conntrack => "ct_clear".to_string(),
            0 if cfg.normal && rng.gen_bool(0.2) => "NORMAL".to_string(),
            // The stack: register and source MAC bits pushed, popped into
            // registers (reg0's bits are an output's port elsewhere).
            4 if cfg.stack && rng.gen_bool(0.5) => pick(
                rng,
                &[
                    "push:NXM_NX_REG0[0..1]",
                    "push:NXM_OF_ETH_SRC[0..1]",
                    "push:NXM_NX_REG1[0..3]",
                    "pop:NXM_NX_REG0[0..1]",
                    "pop:NXM_NX_REG1[0..3]",
                ],
            )
            .to_string(),
            0 if rng.gen_bool(0.2) => if rng.gen_bool(0.7) { "FLOOD" } else { "ALL" }.to_string(),
            // An output whose port a field holds: register bits an earlier
            // load set (0 outputs nothing), or the low bits of the L4
            // destination port (exact in the megaflow).
            1 | 2 if rng.gen_bool(0.3) => {
                let tcp = m.split(',').any(|x| x == "tcp" || x == "tcp6");
                let udp = m.split(',').any(|x| x == "udp" || x == "udp6");
                match (l4, tcp, udp) {
                    (true, true, _) if rng.gen_bool(0.5) => "output:NXM_OF_TCP_DST[0..1]".to_string(),
                    (true, _, true) if rng.gen_bool(0.5) => "output:NXM_OF_UDP_DST[0..1]".to_string(),
                    _ => "output:NXM_NX_REG0[0..1]".to_string(),
                }
            }
            0..=3 => format!("output:{}", rng.gen_range(1..=cfg.n_ports)),
            4 => format!("mod_dl_dst:{}", pick(rng, &MACS)),
            5 => format!("mod_dl_src:{}", pick(rng, &MACS)),
            6 if is_ip => format!("mod_nw_dst:{}", rand_addr(rng)),
            7 if is_ip || is_ip6 => "dec_ttl".to_string(),
            8 if l4 => format!("mod_tp_dst:{}", pick(rng, &PORTS_L4)),
            9 => format!("load:{:#x}->NXM_NX_REG0[0..3]", rng.gen_range(0..4)),
            10 if cfg.resubmit && table + 1 < cfg.n_tables => {
                format!("resubmit(,{})", rng.gen_range(table + 1..cfg.n_tables))
            }
            11 if !groups.is_empty() => format!("group:{}", pick(rng, groups)),
            12 => {
                *has_vlan = true;
                format!("mod_vlan_vid:{}", rng.gen_range(1..4))
            }
            13 if *has_vlan => {
                *has_vlan = false;
                "pop_vlan".to_string()
            }
            14 if is_ip || is_ip6 => format!("set_field:{}->ip_dscp", pick(rng, &[0, 4, 8])),
            15 if is_ip6 => format!("set_field:{}->ipv6_dst", rand_addr6(rng)),
            16 if is_ip6 => format!("set_field:{}->ipv6_src", rand_addr6(rng)),
            17 if !st.pushed && !st.popped => {
                st.pushed = true;
                format!("push_mpls:{}", pick(rng, &["0x8847", "0x8847", "0x8848"]))
            }
            18 | 19 if mpls => match rng.gen_range(0..4) {
                0 => format!("set_field:{}->mpls_label", rng.gen_range(0..4)),
                1 => format!("set_mpls_tc:{}", rng.gen_range(0..3)),
                2 => format!("set_mpls_ttl({})", pick(rng, &[1, 9])),
                _ => "dec_mpls_ttl".to_string(),
            },
            // What follows a pop (a lookup, an L3 action) mostly waits for
            // a recirculation that shows the header under the labels.
            20 if mpls && rng.gen_bool(0.6) => {
                st.popped = true;
                let to = *pick(rng, &["0x0800", "0x0800", "0x86dd", "0x8847"]);
                st.popped_to = match to {
                    "0x0800" => 4,
                    "0x86dd" => 6,
                    _ => 0,
                };
                format!("pop_mpls:{to}")
            }
            _ => continue,
        };
        return a;
    }
}

/// A random `learn(...)` (`ip`: the learning flow matches IPv4, so the
/// learn may read IP addresses, as Open vSwitch checks).
fn gen_learn(rng: &mut StdRng, cfg: &GenConfig, ip: bool) -> String {
    let t = rng.gen_range(0..cfg.n_tables);
    let prio = pick(rng, &[5, 50, 500]);
    let head = format!("learn(table={t},priority={prio}");
    match rng.gen_range(0..if ip { 4 } else { 3 }) {
        0 => format!("{head},NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],load:{:#x}->NXM_NX_REG0[0..3])", rng.gen_range(0..4)),
        1 => format!("{head},idle_timeout=60,fin_idle_timeout=5,NXM_OF_ETH_SRC[0..1],output:NXM_NX_REG0[0..1])"),
        2 => format!(
            "{head},cookie={:#x},limit={},result_dst=NXM_NX_REG0[2],NXM_OF_ETH_DST[0..1]=NXM_OF_ETH_SRC[0..1],output:NXM_OF_IN_PORT[])",
            rng.gen_range(1..3),
            rng.gen_range(1..3)
        ),
        _ => format!(
            "{head},delete_learned,cookie={:#x},dl_type=0x800,NXM_OF_IP_DST[]=NXM_OF_IP_SRC[],load:NXM_OF_IN_PORT[]->NXM_NX_REG1[0..15])",
            rng.gen_range(1..3)
        ),
    }
}

/// A random `ct(...)` for an IPv4 (`v4`) or IPv6 packet (`invalid`: of a
/// match on +inv): a zone (now and
/// then from a register), maybe commit with a mark or label written and a
/// NAT, maybe resuming at a later table.
fn gen_ct(rng: &mut StdRng, cfg: &GenConfig, table: u8, v4: bool, l4: bool, invalid: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    // Packets matched as invalid cannot be committed.
    let commit = !invalid && rng.gen_bool(0.5);
    if commit {
        parts.push("commit".into());
    }
    if rng.gen_bool(0.2) {
        parts.push("zone=NXM_NX_REG0[0..15]".into());
    } else {
        let z = *pick(rng, &[0u16, 1, 5]);
        if z != 0 {
            parts.push(format!("zone={z}"));
        }
    }
    // Forward only: Open vSwitch's ofproto/trace follows ct recirculations
    // without a bound, and a loop back would never end there.
    if table + 1 < cfg.n_tables && rng.gen_bool(0.6) {
        parts.push(format!("table={}", rng.gen_range(table + 1..cfg.n_tables)));
    }
    match rng.gen_range(0..5) {
        0 if commit => {
            let port = if l4 { format!(":{}", pick(rng, &PORTS_L4)) } else { String::new() };
            let kind = if rng.gen_bool(0.5) { "dst" } else { "src" };
            let a = if v4 { rand_addr(rng) } else { format!("[{}]", rand_addr6(rng)) };
            parts.push(format!("nat({kind}={a}{port})"));
        }
        1 => parts.push("nat".into()),
        _ => {}
    }
    if commit && rng.gen_bool(0.5) {
        let e = if rng.gen_bool(0.6) {
            format!("set_field:{:#x}/0xf->ct_mark", rng.gen_range(0..3))
        } else {
            "set_field:0x1/0x1->ct_label".to_string()
        };
        parts.push(format!("exec({e})"));
    }
    format!("ct({})", parts.join(","))
}

/// What earlier actions of a rule's list did to the packet.
#[derive(Clone, Default)]
struct ActState {
    has_vlan: bool,
    /// A push_mpls ran: the packet is MPLS now.
    pushed: bool,
    /// A pop_mpls ran.
    popped: bool,
    /// It left IPv4 (4) or IPv6 (6), or labels still (0).
    popped_to: u8,
}

/// One random flow line for `table` (as in [`gen_case`]).
pub fn gen_flow_line(rng: &mut StdRng, cfg: &GenConfig, t: u8, group_ids: &[u32]) -> String {
    let prio = rng.gen_range(1..40u16) * 10;
    flow_line(rng, cfg, t, group_ids, prio)
}

fn flow_line(rng: &mut StdRng, cfg: &GenConfig, t: u8, group_ids: &[u32], prio: u16) -> String {
    let m = gen_match(rng, cfg);
    let mut st = ActState { has_vlan: m.contains("dl_vlan="), ..ActState::default() };
    let mut acts: Vec<String> = Vec::new();
    for _ in 0..rng.gen_range(0..4) {
        acts.push(gen_action(rng, cfg, &m, t, group_ids, &mut st));
    }
    if cfg.write_actions && rng.gen_bool(0.2) {
        acts.push(format!("write_actions(output:{})", rng.gen_range(1..=cfg.n_ports)));
    }
    if t + 1 < cfg.n_tables && rng.gen_bool(0.5) {
        acts.push(format!("goto_table:{}", rng.gen_range(t + 1..cfg.n_tables)));
    }
    let acts = if acts.is_empty() { "drop".to_string() } else { acts.join(",") };
    let m = if m.is_empty() { String::new() } else { format!("{m},") };
    format!("table={t},priority={prio},{m}actions={acts}")
}

/// One dimension of a generated conjunctive flow: a field family and the
/// values its clauses match (one clause flow each).
const CONJ_DIMS: [&str; 5] = ["nw_src", "nw_dst", "in_port", "reg0", "tp_dst"];

/// A conjunctive flow at `prio` (ids from `base`): its clause flows and
/// its `conj_id` flow, as flow lines; now and then a second conjunction
/// at the same priority sharing the first's first clause flow, whose other
/// dimension matches values of the same field the first's does not (so no
/// packet completes both: overlapping conjunctions are unpredictable in
/// Open vSwitch).
fn conjunctive_flows(rng: &mut StdRng, cfg: &GenConfig, t: u8, groups: &[u32], prio: u16, base: u32) -> String {
    let n = rng.gen_range(2..=3usize);
    let mut dims: Vec<&str> = CONJ_DIMS.to_vec();
    dims.shuffle(rng);
    dims.truncate(n);
    let proto = if dims.contains(&"tp_dst") { "tcp" } else { "ip" };
    let value = |rng: &mut StdRng, d: &str| conj_value(rng, cfg, d);
    // Clause flows: match text -> conjunction actions.
    let mut clauses: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |m: String, a: String| match clauses.iter_mut().find(|(x, _)| *x == m) {
        Some((_, acts)) => acts.push(a),
        None => clauses.push((m, vec![a])),
    };
    let (id, second) = (base + 1, base + 2);
    let mut used: Vec<Vec<String>> = Vec::new();
    for (k, d) in dims.iter().enumerate() {
        let mut vals: Vec<String> = (0..rng.gen_range(1..=4)).map(|_| value(rng, d)).collect();
        vals.sort();
        vals.dedup();
        for v in &vals {
            add(format!("{proto},{v}"), format!("conjunction({id},{}/{n})", k + 1));
        }
        used.push(vals);
    }
    let two = rng.gen_bool(0.3);
    if two {
        // The shared first clause, and for the others values the first
        // conjunction's same dimension does not match.
        add(format!("{proto},{}", used[0][0]), format!("conjunction({second},1/{n})"));
        for (k, d) in dims.iter().enumerate().skip(1) {
            if let Some(v) = (0..8).map(|_| value(rng, d)).find(|v| !used[k].contains(v)) {
                add(format!("{proto},{v}"), format!("conjunction({second},{}/{n})", k + 1));
            }
        }
    }
    let mut out = String::new();
    for (m, acts) in clauses {
        out.push_str(&format!("table={t},priority={prio},{m},actions={}\n", acts.join(",")));
    }
    for c in if two { vec![id, second] } else { vec![id] } {
        // The conj_id flow: usually there, sometimes narrower than the
        // clauses (then a completed conjunction may go unanswered).
        if rng.gen_bool(0.15) {
            continue;
        }
        let m = if rng.gen_bool(0.2) { format!("conj_id={c},tcp") } else { format!("conj_id={c},{proto}") };
        let mut st = ActState::default();
        let mut acts: Vec<String> =
            (0..rng.gen_range(1..3)).map(|_| gen_action(rng, cfg, &m, t, groups, &mut st)).collect();
        if t + 1 < cfg.n_tables && rng.gen_bool(0.4) {
            acts.push(format!("goto_table:{}", rng.gen_range(t + 1..cfg.n_tables)));
        }
        out.push_str(&format!("table={t},priority={prio},{m},actions={}\n", acts.join(",")));
    }
    out
}

/// One value of conjunctive-flow dimension `d` (of [`CONJ_DIMS`]), as a match.
fn conj_value(rng: &mut StdRng, cfg: &GenConfig, d: &str) -> String {
    match d {
        "nw_src" => format!("nw_src={}/24", pick(rng, &NETS)),
        "nw_dst" => format!("nw_dst={}/16", pick(rng, &NETS)),
        "in_port" => format!("in_port={}", rng.gen_range(1..=cfg.n_ports)),
        "reg0" => format!("reg0={:#x}/0x3", rng.gen_range(0..4)),
        _ => format!("tp_dst={}", pick(rng, &PORTS_L4)),
    }
}

/// A new clause flow for table `t` at `prio` with the actions `conj`
/// (`conjunction(...)`): one dimension's value, as the generated
/// conjunctive flows' clauses have (for updates that add a member).
pub fn gen_clause_line(rng: &mut StdRng, cfg: &GenConfig, t: u8, prio: u16, conj: &str) -> String {
    let d = *pick(rng, &CONJ_DIMS);
    let proto = if d == "tp_dst" || rng.gen_bool(0.2) { "tcp" } else { "ip" };
    format!("table={t},priority={prio},{proto},{},actions={conj}", conj_value(rng, cfg, d))
}

/// The match part of a random flow line (for non-strict mod/del-flows).
pub fn gen_match_text(rng: &mut StdRng, cfg: &GenConfig) -> String {
    gen_match(rng, cfg)
}

/// One random group line with this id (buckets may name `group_ids` lower than it).
pub fn gen_group_line(rng: &mut StdRng, cfg: &GenConfig, id: u32) -> String {
    let types: &[&str] =
        if cfg.multi_bucket_select { &["all", "select", "indirect", "ff"] } else { &["all", "indirect", "ff"] };
    let ty = *pick(rng, types);
    let n_b = if ty == "indirect" { 1 } else { rng.gen_range(1..4) };
    let mut line = format!("group_id={id},type={ty}");
    for b in 0..n_b {
        let mut acts = Vec::new();
        if rng.gen_bool(0.3) {
            acts.push(format!("mod_dl_dst:{}", pick(rng, &MACS)));
        }
        acts.push(format!("output:{}", rng.gen_range(1..=cfg.n_ports)));
        // A bucket runs as the action set it makes (as in Open vSwitch): a
        // set after the output still applies, the last output wins, and
        // what a set has no place for is dropped.
        if rng.gen_bool(0.15) {
            acts.push(format!("mod_dl_src:{}", pick(rng, &MACS)));
        }
        if rng.gen_bool(0.1) {
            acts.push(format!("output:{}", rng.gen_range(1..=cfg.n_ports)));
        }
        if rng.gen_bool(0.1) {
            acts.insert(0, "note:ab".to_string());
        }
        // Fast failover watches a port, or now and then a group made before.
        let watch = match (ty, id) {
            ("ff", 2..) if rng.gen_bool(0.3) => format!("watch_group:{},", rng.gen_range(1..id)),
            ("ff", _) => format!("watch_port:{},", b + 1),
            _ => String::new(),
        };
        line.push_str(&format!(",bucket={watch}actions={}", acts.join(",")));
    }
    line
}

/// A seeded generator (for callers that build their own sequences).
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Generates a random pipeline.
pub fn gen_case(seed: u64, cfg: &GenConfig) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut groups_txt = String::new();
    let n_groups = rng.gen_range(0..4u32);
    let mut group_ids = Vec::new();
    for g in 1..=n_groups {
        groups_txt.push_str(&gen_group_line(&mut rng, cfg, g));
        groups_txt.push('\n');
        group_ids.push(g);
    }
    let mut flows = String::from("# generated by kairo-testkit\n");
    for t in 0..cfg.n_tables {
        if cfg.miss_continue && t + 1 < cfg.n_tables && rng.gen_bool(0.2) {
            flows.push_str(&format!("#@ table={t} miss=continue:{}\n", rng.gen_range(t + 1..cfg.n_tables)));
        }
        let n = rng.gen_range(cfg.rules_per_table.clone());
        let mut prios: Vec<u16> = Vec::new();
        if cfg.conjunction && rng.gen_bool(0.5) {
            for c in 0..rng.gen_range(1..3u32) {
                // High in the table, so that packets meet them.
                let prio = loop {
                    let p = rng.gen_range(20..40u16) * 10;
                    if !prios.contains(&p) {
                        break p;
                    }
                };
                prios.push(prio);
                flows.push_str(&conjunctive_flows(&mut rng, cfg, t, &group_ids, prio, 100 * u32::from(t) + 10 * c));
            }
        }
        for _ in 0..n {
            let prio = loop {
                let p = rng.gen_range(1..40u16) * 10;
                if !cfg.unique_priorities || !prios.contains(&p) {
                    break p;
                }
            };
            prios.push(prio);
            flows.push_str(&flow_line(&mut rng, cfg, t, &group_ids, prio));
            flows.push('\n');
        }
    }
    Case { flows, groups: groups_txt }
}

/// Random packet specs (ovs-ofctl syntax accepted by both `kairo trace` and
/// `ofproto/trace`: UDP ports as udp_src/udp_dst).
pub fn gen_packets(seed: u64, n: usize, n_ports: u32) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    (0..n)
        .map(|_| {
            let mut p = vec![format!("in_port={}", rng.gen_range(1..=n_ports))];
            p.push(format!("dl_src={}", pick(&mut rng, &MACS)));
            p.push(format!("dl_dst={}", pick(&mut rng, &MACS)));
            if rng.gen_bool(0.15) {
                p.push(format!("dl_vlan={}", rng.gen_range(1..4)));
            }
            let proto =
                *pick(&mut rng, &["tcp", "tcp", "udp", "udp", "icmp", "arp", "tcp6", "udp6", "icmp6", "mpls", "mpls"]);
            p.push(proto.to_string());
            if proto == "mpls" {
                p.push(format!("mpls_label={}", rng.gen_range(0..4)));
                p.push(format!("mpls_tc={}", rng.gen_range(0..2)));
                p.push(format!("mpls_ttl={}", *pick(&mut rng, &[0u8, 1, 2, 64])));
                p.push(format!("mpls_bos={}", u8::from(rng.gen_bool(0.8))));
            } else if V6.contains(&proto) {
                p.push(format!("ipv6_src={}", rand_addr6(&mut rng)));
                p.push(format!("ipv6_dst={}", rand_addr6(&mut rng)));
                p.push(format!("nw_ttl={}", *pick(&mut rng, &[0u8, 1, 2, 64])));
                if rng.gen_bool(0.2) {
                    p.push("ipv6_label=0x1".into());
                }
                match proto {
                    "tcp6" => {
                        p.push(format!("tcp_src={}", rng.gen_range(0..1100)));
                        p.push(format!("tcp_dst={}", pick(&mut rng, &PORTS_L4)));
                    }
                    "udp6" => {
                        p.push(format!("udp_src={}", rng.gen_range(0..1100)));
                        p.push(format!("udp_dst={}", pick(&mut rng, &PORTS_L4)));
                    }
                    _ => {
                        let ty = *pick(&mut rng, &[128u8, 135, 136]);
                        p.push(format!("icmpv6_type={ty}"));
                        p.push("icmpv6_code=0".into());
                        if ty == 135 {
                            p.push(format!("nd_target={}", rand_addr6(&mut rng)));
                            p.push(format!("nd_sll={}", pick(&mut rng, &MACS)));
                        } else if ty == 136 {
                            p.push(format!("nd_target={}", rand_addr6(&mut rng)));
                            p.push(format!("nd_tll={}", pick(&mut rng, &MACS)));
                        }
                    }
                }
            } else if proto == "arp" {
                p.push(format!("arp_op={}", rng.gen_range(1..3)));
                p.push(format!("arp_spa={}", rand_addr(&mut rng)));
                p.push(format!("arp_tpa={}", rand_addr(&mut rng)));
            } else {
                p.push(format!("nw_src={}", rand_addr(&mut rng)));
                p.push(format!("nw_dst={}", rand_addr(&mut rng)));
                p.push(format!("nw_ttl={}", *pick(&mut rng, &[0u8, 1, 2, 64])));
                match proto {
                    "tcp" => {
                        p.push(format!("tcp_src={}", rng.gen_range(0..1100)));
                        p.push(format!("tcp_dst={}", pick(&mut rng, &PORTS_L4)));
                    }
                    "udp" => {
                        p.push(format!("udp_src={}", rng.gen_range(0..1100)));
                        p.push(format!("udp_dst={}", pick(&mut rng, &PORTS_L4)));
                    }
                    _ => {
                        p.push(format!("icmp_type={}", pick(&mut rng, &[0u8, 8])));
                        p.push("icmp_code=0".into());
                    }
                }
            }
            p.join(",")
        })
        .collect()
}

/// A group file of `levels` chained `all` groups (ids 1..=levels) of `fan`
/// buckets each: every bucket of a group names the next group, the last
/// group's buckets run `leaf` (a fan-out of `fan^levels` runs of `leaf`).
pub fn fan_out_groups(levels: u32, fan: usize, leaf: &str) -> String {
    (1..=levels)
        .map(|g| {
            let b = if g < levels { format!("bucket=group:{}", g + 1) } else { format!("bucket={leaf}") };
            format!("group_id={g},type=all,{}\n", vec![b; fan].join(","))
        })
        .collect()
}

/// A group file of `levels` fast-failover groups of `fan` buckets, each
/// bucket watching the next group, the last group empty (never live):
/// deciding the first group's liveness naively costs `fan^levels`.
pub fn watch_chain_groups(levels: u32, fan: usize) -> String {
    (1..=levels)
        .map(|g| match g < levels {
            true => format!(
                "group_id={g},type=fast_failover,{}\n",
                vec![format!("bucket=watch_group:{},actions=output:2", g + 1); fan].join(",")
            ),
            false => format!("group_id={g},type=all\n"),
        })
        .collect()
}

/// Runs `f` on a thread and gives its result if it returns within `secs`
/// (a test of a bound fails instead of hanging).
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs)).ok()
}

/// Packets meant to complete the conjunctive flows of a generated case:
/// each takes, for one conjunction of one table, a clause flow of every
/// dimension and makes a TCP packet inside all of them (a clause on reg0
/// matches only where the register is what the packet brings, zero). The
/// rest of the packet is random as [`gen_packets`] makes it.
pub fn conj_packets(seed: u64, case: &Case, n: usize, n_ports: u32) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc0_1ec7);
    // (table, id) -> clause number -> the clause flows' field matches.
    let mut conjs: std::collections::BTreeMap<(String, u32), Vec<Vec<Vec<String>>>> = Default::default();
    for line in case.flows.lines() {
        let Some((m, acts)) = line.split_once(",actions=") else { continue };
        let table = m.split(',').find(|f| f.starts_with("table=")).unwrap_or("table=0").to_string();
        let fields: Vec<String> = m
            .split(',')
            .filter(|f| ["nw_src=", "nw_dst=", "in_port=", "tp_dst="].iter().any(|p| f.starts_with(p)))
            .map(str::to_string)
            .collect();
        for c in acts.split("conjunction(").skip(1) {
            let Some((id, rest)) = c.split_once(',') else { continue };
            let Some((k, n)) = rest.split_once(')').and_then(|(kn, _)| kn.split_once('/')) else { continue };
            let (Ok(id), Ok(k), Ok(n)) = (id.trim().parse::<u32>(), k.parse::<usize>(), n.parse::<usize>()) else {
                continue;
            };
            let dims = conjs.entry((table.clone(), id)).or_insert_with(|| vec![Vec::new(); n]);
            if let Some(d) = dims.get_mut(k.saturating_sub(1)) {
                d.push(fields.clone());
            }
        }
    }
    let all: Vec<&Vec<Vec<Vec<String>>>> = conjs.values().filter(|d| d.iter().all(|c| !c.is_empty())).collect();
    if all.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|_| {
            let dims = *pick(&mut rng, &all);
            let mut p: Vec<String> = vec![
                format!("in_port={}", rng.gen_range(1..=n_ports)),
                format!("dl_src={}", pick(&mut rng, &MACS)),
                format!("dl_dst={}", pick(&mut rng, &MACS)),
                "tcp".into(),
                format!("nw_src={}", rand_addr(&mut rng)),
                format!("nw_dst={}", rand_addr(&mut rng)),
                format!("nw_ttl={}", pick(&mut rng, &[1u8, 64])),
                format!("tcp_src={}", rng.gen_range(0..1100)),
                format!("tcp_dst={}", pick(&mut rng, &PORTS_L4)),
            ];
            for clause in dims {
                for f in pick(&mut rng, clause) {
                    let (name, v) = f.split_once('=').unwrap_or((f.as_str(), ""));
                    let value = match name {
                        "nw_src" | "nw_dst" => {
                            let (a, len) = v.split_once('/').unwrap_or((v, "32"));
                            let base: std::net::Ipv4Addr = a.parse().unwrap_or(std::net::Ipv4Addr::new(10, 0, 0, 0));
                            let host = 32u32.saturating_sub(len.parse().unwrap_or(32)).min(16);
                            let low = if host == 0 { 0 } else { rng.gen_range(0..1u32 << host) };
                            std::net::Ipv4Addr::from(u32::from(base) | low).to_string()
                        }
                        _ => v.to_string(),
                    };
                    let name = if name == "tp_dst" { "tcp_dst" } else { name };
                    if let Some(slot) = p.iter_mut().find(|x| x.starts_with(&format!("{name}="))) {
                        *slot = format!("{name}={value}");
                    }
                }
            }
            p.join(",")
        })
        .collect()
}

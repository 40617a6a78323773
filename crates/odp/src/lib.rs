//! Datapath actions: the vocabulary the slow path (translation) and the fast
//! path (the datapath) share, what the datapath does to a packet, in Open
//! vSwitch's `ovs-dpctl` notation
//! (`set(ipv4(dst=10.0.0.1,ttl=63)),push_vlan(vid=10,pcp=0),2`). A crate of its
//! own so that the datapath depends on the actions, not on translation.
//!
//! Also parses that notation (as `ofproto/trace` prints it) and applies a list
//! of actions to a key, so two action lists can be compared by their effect:
//! which packets leave on which ports (the model the datapath's execution and
//! the differential tests are checked against). Invariant: [`apply`] of the
//! printed and re-parsed list equals [`apply`] of the original.

pub mod ct;
pub mod nat;

use kairo_flow::field::{Field, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, VLAN_CFI};
use kairo_flow::parse::{format_ipv4, format_ipv6, format_mac, parse_ipv4, parse_ipv6, parse_mac, parse_uint};
use kairo_flow::{FlowKey, FlowMask};

/// Why a packet goes to the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerReason {
    /// A table-miss rule's `controller` action (priority 0, matching everything).
    NoMatch,
    /// An explicit `controller` action.
    Action,
    /// `dec_ttl` on a packet whose TTL would reach zero.
    InvalidTtl,
}

impl ControllerReason {
    /// Its name in ovs-ofctl's syntax (`reason=no_match`).
    pub fn name(self) -> &'static str {
        match self {
            ControllerReason::NoMatch => "no_match",
            ControllerReason::Action => "action",
            ControllerReason::InvalidTtl => "invalid_ttl",
        }
    }

    /// OpenFlow's number for it (OFPR_*).
    pub fn code(self) -> u8 {
        match self {
            ControllerReason::NoMatch => 0,
            ControllerReason::Action => 1,
            ControllerReason::InvalidTtl => 2,
        }
    }

    /// The reason OpenFlow's number names, if kairo reports it.
    pub fn from_code(c: u8) -> Option<ControllerReason> {
        match c {
            0 => Some(ControllerReason::NoMatch),
            1 => Some(ControllerReason::Action),
            2 => Some(ControllerReason::InvalidTtl),
            _ => None,
        }
    }
}

/// How a datapath `hash` action hashes a packet (Open vSwitch's
/// `OVS_HASH_ALG_*`, the high half of a select group's
/// `selection_method_param`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// The 5-tuple (`l4`).
    L4,
    /// The 5-tuple, the same for both directions of a connection (`sym_l4`).
    SymL4,
}

impl HashAlg {
    /// The algorithm of a `selection_method_param`'s high half (0 `l4`,
    /// 1 `sym_l4`; anything else is `l4`, as Open vSwitch falls back).
    pub fn from_param(alg: u32) -> HashAlg {
        if alg == 1 {
            HashAlg::SymL4
        } else {
            HashAlg::L4
        }
    }
    fn name(self) -> &'static str {
        match self {
            HashAlg::L4 => "l4",
            HashAlg::SymL4 => "sym_l4",
        }
    }
}

/// The datapath hash of a packet (what `hash(alg(basis))` stores as
/// `dp_hash`): over the addresses, protocol and ports when the packet has
/// them, else over the Ethernet addresses and type; never 0 (0 means "not
/// hashed", as in Open vSwitch). The values are kairo's own: only the
/// datapath computes them, and translation reads them from the key.
pub fn dp_hash(alg: HashAlg, basis: u32, k: &FlowKey) -> u32 {
    use kairo_flow::field::{ETH_TYPE_IP, ETH_TYPE_IPV6};
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(basis);
    let mut mix = |v: u64| {
        h ^= v;
        h = h.wrapping_mul(0x100_0000_01b3).rotate_left(29);
    };
    // Pairs of (source, destination) words: symmetric mixes each pair in order.
    let pair = |a: u64, b: u64, mix: &mut dyn FnMut(u64)| match alg {
        HashAlg::SymL4 => {
            mix(a.min(b));
            mix(a.max(b));
        }
        HashAlg::L4 => {
            mix(a);
            mix(b);
        }
    };
    let eth = k.get(Field::EthType);
    if eth == ETH_TYPE_IP || eth == ETH_TYPE_IPV6 {
        if eth == ETH_TYPE_IP {
            pair(k.get(Field::IpSrc), k.get(Field::IpDst), &mut mix);
        } else {
            pair(k.get(Field::Ipv6SrcHi), k.get(Field::Ipv6DstHi), &mut mix);
            pair(k.get(Field::Ipv6SrcLo), k.get(Field::Ipv6DstLo), &mut mix);
        }
        let proto = k.get(Field::IpProto);
        mix(proto);
        if matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
            pair(k.get(Field::TpSrc), k.get(Field::TpDst), &mut mix);
        }
    } else {
        pair(k.get(Field::EthSrc), k.get(Field::EthDst), &mut mix);
        mix(eth);
    }
    h ^= h >> 31;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    match (h ^ (h >> 32)) as u32 {
        0 => 1,
        v => v,
    }
}

/// The pseudo-port [`apply`] reports a recirculation on: the packet is
/// looked up again with the key it emits (its `recirc_id` and `dp_hash` set).
pub const RECIRC_PORT: u32 = u32::MAX - 1;

/// One datapath action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DpAction {
    Output(u32),
    SetEth {
        src: Option<u64>,
        dst: Option<u64>,
    },
    PushVlan {
        vid: u16,
        pcp: u8,
    },
    PopVlan,
    /// Push an MPLS label stack entry (label << 12 | tc << 9 | bos << 8 |
    /// ttl) after the VLAN tags; the packet's ethertype becomes `ethertype`.
    PushMpls {
        lse: u32,
        ethertype: u16,
    },
    /// Pop the top MPLS label stack entry; the ethertype becomes `ethertype`.
    PopMpls {
        ethertype: u16,
    },
    /// Overwrite the top MPLS label stack entry.
    SetMpls {
        lse: u32,
    },
    /// `tos` is (value, mask) over the TOS byte (DSCP << 2 | ECN).
    SetIpv4 {
        src: Option<u32>,
        dst: Option<u32>,
        tos: Option<(u8, u8)>,
        ttl: Option<u8>,
    },
    /// `tclass` is (value, mask) over the traffic class byte (DSCP << 2 | ECN).
    SetIpv6 {
        src: Option<u128>,
        dst: Option<u128>,
        label: Option<u32>,
        tclass: Option<(u8, u8)>,
        hlimit: Option<u8>,
    },
    /// Neighbour discovery: the target address and the link-layer options.
    SetNd {
        target: Option<u128>,
        sll: Option<u64>,
        tll: Option<u64>,
    },
    /// L4 ports; `proto` is 6, 17 or 132.
    SetL4 {
        proto: u8,
        src: Option<u16>,
        dst: Option<u16>,
    },
    SetIcmp {
        ty: Option<u8>,
        code: Option<u8>,
    },
    SetIcmpv6 {
        ty: Option<u8>,
        code: Option<u8>,
    },
    SetArp {
        sip: Option<u32>,
        tip: Option<u32>,
        op: Option<u8>,
        sha: Option<u64>,
        tha: Option<u64>,
    },
    /// Run the packet through an OpenFlow meter (by its OpenFlow id): a band
    /// that applies drops it, and nothing after runs.
    Meter(u32),
    /// Send to the controller (Open vSwitch's userspace action with its
    /// controller userdata): why, how much of the packet, and the table and
    /// cookie of the rule whose action it is, for the PACKET_IN.
    Controller {
        reason: ControllerReason,
        max_len: u16,
        table: u8,
        cookie: u64,
        /// The controllers it goes to (by their controller id).
        controller_id: u16,
        /// The pipeline's metadata then, and the action's userdata.
        meta: Box<PacketInMeta>,
    },
    /// Store the packet's hash ([`dp_hash`]) in its `dp_hash` metadata.
    Hash {
        alg: HashAlg,
        basis: u32,
    },
    /// Look the packet (as the actions before made it) up again, with this
    /// `recirc_id`; the actions after it go on with the packet as it was.
    Recirc(u32),
    /// Send the packet through the connection tracker (its ct_* metadata
    /// set, a NAT applied; see [`ct::DpCt`]).
    Ct(Box<ct::DpCt>),
    /// Forget the packet's connection: ct_* metadata back to zero.
    CtClear,
    /// `check_pkt_len(size=N,gt(...),le(...))`: one list or the other by
    /// the packet's length (see [`CheckPktLen`]).
    CheckPktLen(Box<CheckPktLen>),
}

/// What a packet-in says besides the packet and its connection: the
/// pipeline fields that are not zero where the controller action ran
/// (metadata, registers, pkt_mark, tunnel metadata: Open vSwitch's frozen
/// metadata, which its controller action freezes), and the action's
/// userdata. in_port and the ct fields come from the packet itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PacketInMeta {
    pub fields: Vec<(Field, u64)>,
    pub userdata: Vec<u8>,
}

/// Open vSwitch's `check_pkt_len` datapath action: the actions of `gt`
/// for a packet longer than `size` bytes (its length on the wire, L2
/// padding not counted; a segmentation offload's super-frame counts as its
/// largest segment), else those of `le`. They work on a copy of the packet
/// when actions follow (as Open vSwitch's datapath clones it then): what
/// follows sees the packet as it was.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CheckPktLen {
    pub size: u16,
    pub gt: Vec<DpAction>,
    pub le: Vec<DpAction>,
}

impl CheckPktLen {
    /// The list a packet of `len` bytes takes.
    pub fn branch(&self, len: usize) -> &[DpAction] {
        if len > usize::from(self.size) {
            &self.gt
        } else {
            &self.le
        }
    }
}

impl DpAction {
    /// Bytes the action takes in Open vSwitch's Netlink encoding
    /// (`OVS_ACTION_ATTR_*`, 4-byte attribute headers, payloads padded to
    /// 4; rewrites as the masked sets the userspace datapath emits: a key
    /// and a mask): what Open vSwitch's 64 kB bound on one translation's
    /// actions counts.
    pub fn netlink_len(&self) -> usize {
        // A masked set of a key of `n` bytes: outer and inner headers, key and mask.
        let set = |n: usize| 4 + 4 + (2 * n).next_multiple_of(4);
        match self {
            DpAction::Output(_) => 8,
            DpAction::PushVlan { .. } => 8,
            DpAction::PopVlan => 4,
            // ovs_action_push_mpls: the entry and the ethertype, padded.
            DpAction::PushMpls { .. } => 12,
            DpAction::PopMpls { .. } => 8,
            DpAction::SetMpls { .. } => set(4),
            DpAction::Meter(_) => 8,
            DpAction::SetEth { .. } => set(12),
            DpAction::SetIpv4 { .. } => set(12),
            DpAction::SetIpv6 { .. } => set(40),
            DpAction::SetNd { .. } => set(28),
            DpAction::SetIcmpv6 { .. } => set(2),
            DpAction::SetL4 { .. } => set(4),
            DpAction::SetIcmp { .. } => set(2),
            DpAction::SetArp { .. } => set(24),
            // userspace(pid, userdata: the controller cookie).
            DpAction::Controller { .. } => 4 + 8 + 4 + 48,
            // ovs_action_hash (alg, basis); a u32 recirculation id.
            DpAction::Hash { .. } => 12,
            DpAction::Recirc(_) => 8,
            DpAction::Ct(ct) => ct.netlink_len(),
            DpAction::CtClear => 4,
            // The nest, the u16 size (padded), then each list's nest.
            DpAction::CheckPktLen(c) => {
                4 + 8 + 4 + 4 + c.gt.iter().chain(&c.le).map(DpAction::netlink_len).sum::<usize>()
            }
        }
    }

    /// Every action of `actions`, those inside `check_pkt_len` lists too
    /// (each list's before what follows it).
    pub fn all(actions: &[DpAction]) -> Vec<&DpAction> {
        let mut out = Vec::new();
        for a in actions {
            out.push(a);
            if let DpAction::CheckPktLen(c) = a {
                out.extend(DpAction::all(&c.gt));
                out.extend(DpAction::all(&c.le));
            }
        }
        out
    }

    /// The recirculation ids of `actions`, those inside `check_pkt_len`
    /// lists included.
    pub fn recirc_ids(actions: &[DpAction]) -> Vec<u32> {
        DpAction::all(actions)
            .into_iter()
            .filter_map(|a| if let DpAction::Recirc(id) = a { Some(*id) } else { None })
            .collect()
    }

    /// The sizes `check_pkt_len` actions in `actions` (nested ones too)
    /// compare with: the packet lengths 0 and each size + 1 take every
    /// combination of their branches that any length takes.
    pub fn checked_sizes(actions: &[DpAction]) -> Vec<u16> {
        let mut out: Vec<u16> = DpAction::all(actions)
            .into_iter()
            .filter_map(|a| if let DpAction::CheckPktLen(c) = a { Some(c.size) } else { None })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Packet lengths that between them take every branch combination of the
/// `check_pkt_len` actions of all of `lists` (0, then each size + 1).
pub fn telling_lengths(lists: &[&[DpAction]]) -> Vec<usize> {
    let mut sizes: Vec<u16> = lists.iter().flat_map(|l| DpAction::checked_sizes(l)).collect();
    sizes.sort_unstable();
    sizes.dedup();
    std::iter::once(0).chain(sizes.into_iter().map(|s| usize::from(s) + 1)).collect()
}

/// An MPLS label stack entry as Open vSwitch prints it.
fn format_lse(lse: u32) -> String {
    format!("label={},tc={},ttl={},bos={}", lse >> 12, lse >> 9 & 7, lse & 0xff, lse >> 8 & 1)
}

/// The fields a frame shows: under MPLS labels nothing of the L3 and L4
/// headers is visible (a key keeps them, so a pop brings them back), and a
/// frame without an MPLS ethertype has no labels.
fn visible(k: &FlowKey) -> FlowKey {
    let mut v = *k;
    if k.is_mpls() {
        for f in Field::all().filter(|f| f.in_packet() && f.def().stage >= kairo_flow::field::Stage::L3) {
            v.set(f, 0);
        }
    } else {
        for f in [Field::MplsLabel, Field::MplsTc, Field::MplsBos, Field::MplsTtl, Field::MplsLse1, Field::MplsLse2] {
            v.set(f, 0);
        }
    }
    v
}

fn opt<T: std::fmt::Display>(parts: &mut Vec<String>, name: &str, v: Option<T>) {
    if let Some(v) = v {
        parts.push(format!("{name}={v}"));
    }
}

impl std::fmt::Display for DpAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut p = Vec::new();
        match self {
            DpAction::Output(port) => write!(f, "{port}"),
            DpAction::PopVlan => write!(f, "pop_vlan"),
            DpAction::Meter(m) => write!(f, "meter({m})"),
            DpAction::Hash { alg, basis } => write!(f, "hash({}({basis}))", alg.name()),
            DpAction::Recirc(id) => write!(f, "recirc({id:#x})"),
            DpAction::Ct(ct) => write!(f, "{ct}"),
            DpAction::CtClear => f.write_str("ct_clear"),
            DpAction::CheckPktLen(c) => {
                write!(f, "check_pkt_len(size={},gt({}),le({}))", c.size, format_actions(&c.gt), format_actions(&c.le))
            }
            DpAction::PushVlan { vid, pcp } => write!(f, "push_vlan(vid={vid},pcp={pcp})"),
            DpAction::PushMpls { lse, ethertype } => {
                write!(f, "push_mpls({},eth_type={ethertype:#x})", format_lse(*lse))
            }
            DpAction::PopMpls { ethertype } => write!(f, "pop_mpls(eth_type={ethertype:#x})"),
            DpAction::SetMpls { lse } => write!(f, "set(mpls({}))", format_lse(*lse)),
            DpAction::Controller { reason, max_len, table, cookie, controller_id, .. } => {
                let r = reason.code();
                write!(
                    f,
                    "userspace(pid=0,controller(reason={r},rule_cookie={cookie:#x},table={table},\
                     controller_id={controller_id},max_len={max_len}))"
                )
            }
            DpAction::SetEth { src, dst } => {
                opt(&mut p, "src", src.map(format_mac));
                opt(&mut p, "dst", dst.map(format_mac));
                write!(f, "set(eth({}))", p.join(","))
            }
            DpAction::SetIpv4 { src, dst, tos, ttl } => {
                opt(&mut p, "src", src.map(|v| format_ipv4(v as u64)));
                opt(&mut p, "dst", dst.map(|v| format_ipv4(v as u64)));
                opt(
                    &mut p,
                    "tos",
                    tos.map(|(v, m)| if m == 0xff { format!("{v:#x}") } else { format!("{v:#x}/{m:#x}") }),
                );
                opt(&mut p, "ttl", *ttl);
                write!(f, "set(ipv4({}))", p.join(","))
            }
            DpAction::SetIpv6 { src, dst, label, tclass, hlimit } => {
                opt(&mut p, "src", src.map(format_ipv6));
                opt(&mut p, "dst", dst.map(format_ipv6));
                opt(&mut p, "label", label.map(|v| format!("{v:#x}")));
                opt(
                    &mut p,
                    "tclass",
                    tclass.map(|(v, m)| if m == 0xff { format!("{v:#x}") } else { format!("{v:#x}/{m:#x}") }),
                );
                opt(&mut p, "hlimit", *hlimit);
                write!(f, "set(ipv6({}))", p.join(","))
            }
            DpAction::SetNd { target, sll, tll } => {
                opt(&mut p, "target", target.map(format_ipv6));
                opt(&mut p, "sll", sll.map(format_mac));
                opt(&mut p, "tll", tll.map(format_mac));
                write!(f, "set(nd({}))", p.join(","))
            }
            DpAction::SetIcmpv6 { ty, code } => {
                opt(&mut p, "type", *ty);
                opt(&mut p, "code", *code);
                write!(f, "set(icmpv6({}))", p.join(","))
            }
            DpAction::SetL4 { proto, src, dst } => {
                opt(&mut p, "src", *src);
                opt(&mut p, "dst", *dst);
                let name = match *proto as u64 {
                    IPPROTO_UDP => "udp",
                    IPPROTO_SCTP => "sctp",
                    _ => "tcp",
                };
                write!(f, "set({name}({}))", p.join(","))
            }
            DpAction::SetIcmp { ty, code } => {
                opt(&mut p, "type", *ty);
                opt(&mut p, "code", *code);
                write!(f, "set(icmp({}))", p.join(","))
            }
            DpAction::SetArp { sip, tip, op, sha, tha } => {
                opt(&mut p, "sip", sip.map(|v| format_ipv4(v as u64)));
                opt(&mut p, "tip", tip.map(|v| format_ipv4(v as u64)));
                opt(&mut p, "op", *op);
                opt(&mut p, "sha", sha.map(format_mac));
                opt(&mut p, "tha", tha.map(format_mac));
                write!(f, "set(arp({}))", p.join(","))
            }
        }
    }
}

/// Formats a datapath action list (`drop` when empty).
pub fn format_actions(a: &[DpAction]) -> String {
    if a.is_empty() {
        "drop".into()
    } else {
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// What one output sends: the port and the packet's header fields then.
pub type Emitted = (u32, FlowKey);

/// Clears the fields a datapath does not carry (registers, metadata), so
/// emitted packets compare by their headers only.
pub fn packet_fields(k: &FlowKey) -> FlowKey {
    let mut out = *k;
    for f in Field::all() {
        if !f.in_packet() {
            out.set(f, 0);
        }
    }
    out
}

/// Applies datapath actions to a packet: the packets that leave, in order.
/// Controller actions appear as port `u32::MAX`; a recirculation as
/// [`RECIRC_PORT`], with the key the next pass looks up (the packet's
/// fields, in_port, `recirc_id` and the `dp_hash` a `hash` action set).
pub fn apply(actions: &[DpAction], key: &FlowKey) -> Vec<Emitted> {
    apply_ct(actions, key, &mut std::iter::empty())
}

/// The connection tracking metadata a packet carries through the datapath
/// (kept across recirculation, cleared by `ct_clear`).
pub const CT_FIELDS: [Field; 14] = [
    Field::CtState,
    Field::CtZone,
    Field::CtMark,
    Field::CtLabelHi,
    Field::CtLabelLo,
    Field::CtNwProto,
    Field::CtTpSrc,
    Field::CtTpDst,
    Field::CtNwSrc,
    Field::CtNwDst,
    Field::CtIpv6SrcHi,
    Field::CtIpv6SrcLo,
    Field::CtIpv6DstHi,
    Field::CtIpv6DstLo,
];

/// [`apply`], the `ct` actions modelled as [`ct::DpCt::model`] says: a pass
/// recirculated right after a `ct` (what `ct(table=N)` makes) sees the next
/// of `next_states` as its ct_state ([`ct::DEFAULT_NEXT_STATE`] when there
/// are no more), as `ofproto/trace --ct-next` hands them out.
pub fn apply_ct(actions: &[DpAction], key: &FlowKey, next_states: &mut dyn Iterator<Item = u64>) -> Vec<Emitted> {
    apply_ct_len(actions, key, next_states, 0)
}

/// [`apply`] for a packet of `len` bytes on the wire: each `check_pkt_len`
/// takes the list that length takes ([`apply`] and [`apply_ct`] take a
/// packet of length 0: every `le` list). [`telling_lengths`] gives the
/// lengths that between them take every list.
pub fn apply_len(actions: &[DpAction], key: &FlowKey, len: usize) -> Vec<Emitted> {
    apply_ct_len(actions, key, &mut std::iter::empty(), len)
}

/// [`apply_ct`] for a packet of `len` bytes (see [`apply_len`]).
pub fn apply_ct_len(
    actions: &[DpAction],
    key: &FlowKey,
    next_states: &mut dyn Iterator<Item = u64>,
    len: usize,
) -> Vec<Emitted> {
    let mut k = packet_fields(key);
    for f in CT_FIELDS {
        k.set(f, key.get(f));
    }
    let mut dp_hash = key.get(Field::DpHash);
    let mut out = Vec::new();
    apply_list(actions, &mut k, &mut dp_hash, next_states, len, &mut out);
    out
}

/// Applies one list to the packet `k` (its hash `dp_hash`), appending what leaves to `out`.
fn apply_list(
    actions: &[DpAction],
    k: &mut FlowKey,
    dp_hash: &mut u64,
    next_states: &mut dyn Iterator<Item = u64>,
    len: usize,
    out: &mut Vec<Emitted>,
) {
    for (i, a) in actions.iter().enumerate() {
        match a {
            DpAction::Hash { alg, basis } => *dp_hash = u64::from(self::dp_hash(*alg, *basis, &visible(k))),
            DpAction::Ct(ct) => ct.model(k, ct::DEFAULT_NEXT_STATE),
            DpAction::CheckPktLen(c) => {
                // On a copy: what follows sees the packet as it was.
                let (mut k2, mut h2) = (*k, *dp_hash);
                apply_list(c.branch(len), &mut k2, &mut h2, next_states, len, out);
            }
            DpAction::CtClear => {
                for f in CT_FIELDS {
                    k.set(f, 0);
                }
            }
            DpAction::Recirc(id) => {
                if i > 0 && matches!(actions[i - 1], DpAction::Ct(_)) {
                    k.set(Field::CtState, next_states.next().unwrap_or(ct::DEFAULT_NEXT_STATE));
                }
                let mut next = visible(k);
                next.set(Field::RecircId, u64::from(*id));
                next.set(Field::DpHash, *dp_hash);
                out.push((RECIRC_PORT, next));
            }
            DpAction::Output(p) => out.push((*p, packet_fields(&visible(k)))),
            DpAction::Controller { .. } => out.push((u32::MAX, packet_fields(&visible(k)))),
            DpAction::PushMpls { lse, ethertype } => {
                k.set_mpls_lse(2, k.mpls_lse(1));
                k.set_mpls_lse(1, k.mpls_lse(0));
                k.set_mpls_lse(0, *lse);
                k.set(Field::EthType, u64::from(*ethertype));
            }
            DpAction::PopMpls { ethertype } => {
                if k.is_mpls() {
                    k.set_mpls_lse(0, k.mpls_lse(1));
                    k.set_mpls_lse(1, k.mpls_lse(2));
                    k.set_mpls_lse(2, 0);
                    k.set(Field::EthType, u64::from(*ethertype));
                }
            }
            DpAction::SetMpls { lse } => {
                if k.is_mpls() {
                    k.set_mpls_lse(0, *lse);
                }
            }
            // A meter changes no header; whether it drops depends on time and rate.
            DpAction::Meter(_) => {}
            DpAction::SetEth { src, dst } => {
                if let Some(v) = src {
                    k.set(Field::EthSrc, *v);
                }
                if let Some(v) = dst {
                    k.set(Field::EthDst, *v);
                }
            }
            DpAction::PushVlan { vid, pcp } => {
                k.set(Field::VlanTciInner, k.get(Field::VlanTci));
                k.set(Field::VlanTci, VLAN_CFI | *vid as u64 | (*pcp as u64) << 13);
            }
            DpAction::PopVlan => {
                k.set(Field::VlanTci, k.get(Field::VlanTciInner));
                k.set(Field::VlanTciInner, 0);
            }
            DpAction::SetIpv4 { src, dst, tos, ttl } => {
                if let Some(v) = src {
                    k.set(Field::IpSrc, *v as u64);
                }
                if let Some(v) = dst {
                    k.set(Field::IpDst, *v as u64);
                }
                if let Some((v, m)) = tos {
                    let old = (k.get(Field::IpDscp) << 2 | k.get(Field::IpEcn)) as u8;
                    let new = (old & !m) | (v & m);
                    k.set(Field::IpDscp, (new >> 2) as u64);
                    k.set(Field::IpEcn, (new & 3) as u64);
                }
                if let Some(v) = ttl {
                    k.set(Field::IpTtl, *v as u64);
                }
            }
            DpAction::SetIpv6 { src, dst, label, tclass, hlimit } => {
                if let Some(v) = src {
                    k.set_wide(Field::Ipv6SrcHi, *v);
                }
                if let Some(v) = dst {
                    k.set_wide(Field::Ipv6DstHi, *v);
                }
                if let Some(v) = label {
                    k.set(Field::Ipv6Label, u64::from(*v));
                }
                if let Some((v, m)) = tclass {
                    let old = (k.get(Field::IpDscp) << 2 | k.get(Field::IpEcn)) as u8;
                    let new = (old & !m) | (v & m);
                    k.set(Field::IpDscp, (new >> 2) as u64);
                    k.set(Field::IpEcn, (new & 3) as u64);
                }
                if let Some(v) = hlimit {
                    k.set(Field::IpTtl, *v as u64);
                }
            }
            DpAction::SetNd { target, sll, tll } => {
                if let Some(v) = target {
                    k.set_wide(Field::NdTargetHi, *v);
                }
                if let Some(v) = sll {
                    k.set(Field::NdSll, *v);
                }
                if let Some(v) = tll {
                    k.set(Field::NdTll, *v);
                }
            }
            DpAction::SetIcmpv6 { ty, code } => {
                if let Some(v) = ty {
                    k.set(Field::Icmpv6Type, *v as u64);
                }
                if let Some(v) = code {
                    k.set(Field::Icmpv6Code, *v as u64);
                }
            }
            DpAction::SetL4 { src, dst, .. } => {
                if let Some(v) = src {
                    k.set(Field::TpSrc, *v as u64);
                }
                if let Some(v) = dst {
                    k.set(Field::TpDst, *v as u64);
                }
            }
            DpAction::SetIcmp { ty, code } => {
                if let Some(v) = ty {
                    k.set(Field::IcmpType, *v as u64);
                }
                if let Some(v) = code {
                    k.set(Field::IcmpCode, *v as u64);
                }
            }
            DpAction::SetArp { sip, tip, op, sha, tha } => {
                if let Some(v) = sip {
                    k.set(Field::ArpSpa, *v as u64);
                }
                if let Some(v) = tip {
                    k.set(Field::ArpTpa, *v as u64);
                }
                if let Some(v) = op {
                    k.set(Field::ArpOp, *v as u64);
                }
                if let Some(v) = sha {
                    k.set(Field::ArpSha, *v);
                }
                if let Some(v) = tha {
                    k.set(Field::ArpTha, *v);
                }
            }
        }
    }
}

/// The bits of every field a packet carries (what a commit brings the packet up to).
pub fn packet_mask() -> &'static FlowMask {
    static MASK: std::sync::OnceLock<FlowMask> = std::sync::OnceLock::new();
    MASK.get_or_init(|| {
        let mut m = FlowMask::ZERO;
        for f in Field::all().filter(|f| f.in_packet()) {
            m.exact(f);
        }
        m
    })
}

/// An action in Open vSwitch's output that kairo does not model (for example
/// `ct(...)`, until kairo tracks connections).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("datapath action `{0}` is not understood")]
pub struct OdpParseError(pub String);

fn kv(s: &str) -> Vec<(&str, &str)> {
    s.split(',').filter_map(|p| p.split_once('=')).collect()
}

fn strip_mask(v: &str) -> &str {
    v.split('/').next().unwrap_or(v)
}

/// An MPLS label stack entry from its printed parts (`label=..,tc=..,ttl=..,bos=..`).
fn lse_of(num: &dyn Fn(&str) -> Option<u64>) -> Option<u32> {
    let (label, tc, ttl, bos) = (num("label")?, num("tc")?, num("ttl")?, num("bos")?);
    (label < 1 << 20 && tc < 8 && ttl < 256 && bos < 2).then_some((label << 12 | tc << 9 | bos << 8 | ttl) as u32)
}

/// Parses Open vSwitch's `Datapath actions:` text into actions.
pub fn parse_actions(s: &str) -> Result<Vec<DpAction>, OdpParseError> {
    let s = s.trim();
    if s == "drop" || s.is_empty() {
        return Ok(Vec::new());
    }
    let toks = kairo_flow::split_top(s).map_err(|_| OdpParseError(s.to_string()))?;
    let mut out = Vec::new();
    for t in toks {
        let bad = || OdpParseError(t.to_string());
        if let Some(p) = parse_uint(t) {
            out.push(DpAction::Output(p as u32));
            continue;
        }
        if t == "pop_vlan" {
            out.push(DpAction::PopVlan);
            continue;
        }
        if let Some(id) = t.strip_prefix("recirc(").and_then(|x| x.strip_suffix(')')).and_then(parse_uint) {
            out.push(DpAction::Recirc(u32::try_from(id).map_err(|_| bad())?));
            continue;
        }
        if let Some(inner) = t.strip_prefix("hash(").and_then(|x| x.strip_suffix("))")) {
            let (alg, basis) = inner.split_once('(').ok_or_else(bad)?;
            let alg = match alg {
                "l4" => HashAlg::L4,
                "sym_l4" => HashAlg::SymL4,
                _ => return Err(bad()),
            };
            let basis = parse_uint(basis).and_then(|b| u32::try_from(b).ok()).ok_or_else(bad)?;
            out.push(DpAction::Hash { alg, basis });
            continue;
        }
        if let Some(inner) = t.strip_prefix("push_mpls(").and_then(|x| x.strip_suffix(')')) {
            let pairs = kv(inner);
            let num = |name: &str| pairs.iter().find(|(k, _)| *k == name).and_then(|(_, v)| parse_uint(v));
            let lse = lse_of(&num).ok_or_else(bad)?;
            let ethertype = num("eth_type").ok_or_else(bad)? as u16;
            out.push(DpAction::PushMpls { lse, ethertype });
            continue;
        }
        if let Some(inner) = t.strip_prefix("pop_mpls(eth_type=").and_then(|x| x.strip_suffix(')')) {
            out.push(DpAction::PopMpls { ethertype: parse_uint(inner).ok_or_else(bad)? as u16 });
            continue;
        }
        if t == "ct_clear" {
            out.push(DpAction::CtClear);
            continue;
        }
        if let Some(inner) = t.strip_prefix("check_pkt_len(").and_then(|x| x.strip_suffix(')')) {
            let parts = kairo_flow::split_top(inner).map_err(|_| bad())?;
            let [size, gt, le] = parts[..] else { return Err(bad()) };
            let size = size.strip_prefix("size=").and_then(parse_uint).and_then(|v| u16::try_from(v).ok());
            let list = |x: &str, name: &str| {
                x.strip_prefix(name)
                    .and_then(|x| x.strip_prefix('('))
                    .and_then(|x| x.strip_suffix(')'))
                    .map(parse_actions)
            };
            let (Some(size), Some(gt), Some(le)) = (size, list(gt, "gt"), list(le, "le")) else { return Err(bad()) };
            out.push(DpAction::CheckPktLen(Box::new(CheckPktLen { size, gt: gt?, le: le? })));
            continue;
        }
        if t == "ct" || t.starts_with("ct(") {
            out.push(DpAction::Ct(Box::new(ct::DpCt::parse(t).ok_or_else(bad)?)));
            continue;
        }
        if let Some(m) = t.strip_prefix("meter(").and_then(|x| x.strip_suffix(')')).and_then(parse_uint) {
            out.push(DpAction::Meter(m as u32));
            continue;
        }
        if let Some(inner) = t.strip_prefix("push_vlan(").and_then(|x| x.strip_suffix(')')) {
            let mut vid = 0;
            let mut pcp = 0;
            for (k, v) in kv(inner) {
                match k {
                    "vid" => vid = parse_uint(v).ok_or_else(bad)? as u16,
                    "pcp" => pcp = parse_uint(v).ok_or_else(bad)? as u8,
                    _ => {}
                }
            }
            out.push(DpAction::PushVlan { vid, pcp });
            continue;
        }
        if t.starts_with("userspace(") && t.contains("controller(") {
            let reason = if t.contains("reason=2") {
                ControllerReason::InvalidTtl
            } else if t.contains("reason=0") {
                ControllerReason::NoMatch
            } else {
                ControllerReason::Action
            };
            // Open vSwitch names the rule's table through a frozen state, not here.
            let cookie = kv(t.trim_end_matches(')'))
                .into_iter()
                .find(|(k, _)| *k == "rule_cookie")
                .and_then(|(_, v)| parse_uint(v))
                .unwrap_or(0);
            let controller_id = kv(t.trim_end_matches(')'))
                .into_iter()
                .find(|(k, _)| *k == "controller_id")
                .and_then(|(_, v)| parse_uint(v))
                .unwrap_or(0) as u16;
            // (Open vSwitch keeps the metadata and userdata in the frozen state its recirc_id names.)
            let meta = Box::default();
            out.push(DpAction::Controller { reason, max_len: u16::MAX, table: 0, cookie, controller_id, meta });
            continue;
        }
        let inner = t
            .strip_prefix("set(")
            .or_else(|| t.strip_prefix("set_masked("))
            .and_then(|x| x.strip_suffix(')'))
            .ok_or_else(bad)?;
        let (kind, body) = inner.split_once('(').ok_or_else(bad)?;
        let body = body.strip_suffix(')').ok_or_else(bad)?;
        let pairs = kv(body);
        let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let num = |name: &str| get(name).and_then(|v| parse_uint(strip_mask(v)));
        let ip = |name: &str| get(name).and_then(|v| parse_ipv4(strip_mask(v))).map(|v| v as u32);
        let mac = |name: &str| get(name).and_then(|v| parse_mac(strip_mask(v)));
        let ip6 = |name: &str| get(name).and_then(|v| parse_ipv6(strip_mask(v)));
        let byte_masked = |name: &str| -> Result<Option<(u8, u8)>, OdpParseError> {
            match get(name) {
                None => Ok(None),
                Some(v) => {
                    let (a, m) = v.split_once('/').unwrap_or((v, "0xff"));
                    Ok(Some((parse_uint(a).ok_or_else(bad)? as u8, parse_uint(m).ok_or_else(bad)? as u8)))
                }
            }
        };
        match kind {
            "eth" => out.push(DpAction::SetEth { src: mac("src"), dst: mac("dst") }),
            "ipv4" => {
                let tos = byte_masked("tos")?;
                out.push(DpAction::SetIpv4 { src: ip("src"), dst: ip("dst"), tos, ttl: num("ttl").map(|v| v as u8) })
            }
            "ipv6" => out.push(DpAction::SetIpv6 {
                src: ip6("src"),
                dst: ip6("dst"),
                label: num("label").map(|v| v as u32),
                tclass: byte_masked("tclass")?,
                hlimit: num("hlimit").map(|v| v as u8),
            }),
            // Open vSwitch's userspace datapath sets the whole entry.
            "mpls" if !body.contains('/') => out.push(DpAction::SetMpls { lse: lse_of(&num).ok_or_else(bad)? }),
            "nd" => out.push(DpAction::SetNd { target: ip6("target"), sll: mac("sll"), tll: mac("tll") }),
            "icmpv6" => {
                out.push(DpAction::SetIcmpv6 { ty: num("type").map(|v| v as u8), code: num("code").map(|v| v as u8) })
            }
            "tcp" | "udp" | "sctp" => {
                let proto = match kind {
                    "tcp" => IPPROTO_TCP,
                    "udp" => IPPROTO_UDP,
                    _ => IPPROTO_SCTP,
                } as u8;
                out.push(DpAction::SetL4 {
                    proto,
                    src: num("src").map(|v| v as u16),
                    dst: num("dst").map(|v| v as u16),
                })
            }
            "icmp" => {
                out.push(DpAction::SetIcmp { ty: num("type").map(|v| v as u8), code: num("code").map(|v| v as u8) })
            }
            "arp" => out.push(DpAction::SetArp {
                sip: ip("sip"),
                tip: ip("tip"),
                op: num("op").map(|v| v as u8),
                sha: mac("sha"),
                tha: mac("tha"),
            }),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_ovs_prints() {
        let a = parse_actions("set(eth(src=00:00:00:00:00:11)),set(ipv4(dst=10.1.1.1,ttl=63)),2").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(format_actions(&a), "set(eth(src=00:00:00:00:00:11)),set(ipv4(dst=10.1.1.1,ttl=63)),2");
        let b = parse_actions("1,set(ipv4(src=1.2.3.4,tos=0x10/0xfc)),3").unwrap();
        assert_eq!(format_actions(&b), "1,set(ipv4(src=1.2.3.4,tos=0x10/0xfc)),3");
        let c = parse_actions("pop_vlan,push_vlan(vid=7,pcp=0),2").unwrap();
        assert_eq!(format_actions(&c), "pop_vlan,push_vlan(vid=7,pcp=0),2");
        let r = parse_actions("hash(sym_l4(0)),recirc(0x2)").unwrap();
        assert_eq!(r, vec![DpAction::Hash { alg: HashAlg::SymL4, basis: 0 }, DpAction::Recirc(2)]);
        assert_eq!(format_actions(&r), "hash(sym_l4(0)),recirc(0x2)");
        let k = kairo_flow::parse_key("in_port=3,tcp,nw_src=1.2.3.4,nw_dst=5.6.7.8,tp_src=9,tp_dst=80").unwrap();
        let (port, next) = apply(&r, &k)[0];
        assert_eq!(port, RECIRC_PORT);
        assert_eq!((next.get(Field::RecircId), next.get(Field::InPort)), (2, 3));
        assert_eq!(next.get(Field::DpHash), u64::from(dp_hash(HashAlg::SymL4, 0, &k)));
        assert!(parse_actions("hash(crc(0))").is_err());
        let v6 = "set(ipv6(src=2001:db8::1,label=0x12345,tclass=0x20/0xfc,hlimit=63)),set(nd(target=fe80::1,sll=00:00:00:00:00:01)),set(icmpv6(type=136)),3";
        let d = parse_actions(v6).unwrap();
        assert_eq!(format_actions(&d), v6);
        let k = kairo_flow::parse_key("icmp6,icmp_type=135,ipv6_src=::9,nw_ttl=64,nw_tos=4").unwrap();
        let (_, out) = apply(&d, &k)[0];
        assert_eq!(out.get_wide(Field::Ipv6SrcHi), 0x2001_0db8 << 96 | 1);
        assert_eq!((out.get(Field::IpTtl), out.get(Field::IpDscp), out.get(Field::IpEcn)), (63, 8, 0));
        assert_eq!((out.get(Field::Ipv6Label), out.get(Field::Icmpv6Type)), (0x12345, 136));
        assert_eq!((out.get_wide(Field::NdTargetHi), out.get(Field::NdSll)), (0xfe80 << 112 | 1, 1));
        assert_eq!(parse_actions("drop").unwrap(), vec![]);
        let m = "push_mpls(label=100,tc=6,ttl=17,bos=1,eth_type=0x8847),2,set(mpls(label=5,tc=3,ttl=8,bos=1)),pop_mpls(eth_type=0x800),3";
        let e = parse_actions(m).unwrap();
        assert_eq!(format_actions(&e), m);
        let k = kairo_flow::parse_key("in_port=1,tcp,nw_src=1.2.3.4,tp_dst=80").unwrap();
        let out = apply(&e, &k);
        // Under the label the TCP/IP headers do not show; after the pop they are back.
        assert_eq!((out[0].1.get(Field::MplsLabel), out[0].1.get(Field::IpSrc)), (100, 0));
        assert_eq!(out[0].1.get(Field::EthType), 0x8847);
        assert_eq!(
            (out[1].1.get(Field::EthType), out[1].1.get(Field::IpSrc), out[1].1.get(Field::TpDst)),
            (0x800, 0x0102_0304, 80)
        );
        assert_eq!(out[1].1.get(Field::MplsLabel), 0);
        let u = parse_actions("set(eth(dst=00:00:00:00:00:22)),userspace(pid=0,controller(reason=2,dont_send=1,continuation=0,recirc_id=1,rule_cookie=0,controller_id=0,max_len=65535))").unwrap();
        assert_eq!(
            u[1],
            DpAction::Controller {
                reason: ControllerReason::InvalidTtl,
                max_len: u16::MAX,
                table: 0,
                cookie: 0,
                controller_id: 0,
                meta: Box::default(),
            }
        );
    }
}

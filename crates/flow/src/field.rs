//! The field table: the one place that says which header and metadata fields a
//! [`FlowKey`](crate::FlowKey) holds, where each one lives, how it is named in
//! Open vSwitch syntax, how it prints, which lookup stage it belongs to and what
//! it requires of the packet (its prerequisites).
//!
//! Invariant: every field occupies `bits` contiguous bits of exactly one 64-bit
//! word of the key; fields of one [`Stage`] occupy a contiguous range of words,
//! in stage order, so a staged lookup can hash a key stage by stage. The
//! placement is computed at compile time from this table ([`PLACEMENT`]):
//! adding a field is one line in [`FIELDS`] and one variant in [`Field`].

/// The lookup stages of a staged classifier lookup, in the order they are
/// checked (as Open vSwitch's classifier: metadata, L2, L3, L4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Meta = 0,
    L2 = 1,
    L3 = 2,
    L4 = 3,
}

/// Number of lookup stages.
pub const N_STAGES: usize = 4;

/// How a field's value is written and read in ovs-ofctl syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fmt {
    Dec,
    Hex,
    Mac,
    Ipv4,
    /// `ip_frag`: `no`, `yes`, `first`, `later`, `not_later`.
    Frag,
    /// `tcp_flags`: hex or `+syn-ack` flag notation.
    TcpFlags,
    /// `ct_state`: hex or `+trk+est` flag notation.
    CtState,
    /// The high 64 bits of a 128-bit field (an IPv6 address; `ct_label`,
    /// which is written in hex); its low half is the next field
    /// ([`Fmt::Ipv6Lo`]). Written, read and printed as one value.
    Ipv6Hi,
    /// The low 64 bits of an IPv6 address: never named on its own.
    Ipv6Lo,
}

/// What a packet must be for a field to be meaningful (Open vSwitch's
/// prerequisites). A match on a field whose prerequisite the match does not
/// itself guarantee is rejected, as `ovs-ofctl` does for OpenFlow 1.2+.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prereq {
    None,
    /// eth_type = 0x0800
    Ipv4,
    /// eth_type = 0x86dd
    Ipv6,
    /// IPv4 or IPv6
    Ip,
    /// eth_type = 0x0806
    Arp,
    /// IPv4 or IPv6, and ip_proto in {6, 17, 132}
    L4,
    /// IPv4 or IPv6, and ip_proto = 6
    Tcp,
    /// IPv4 and ip_proto = 1
    Icmp,
    /// IPv6 and ip_proto = 58
    Icmpv6,
    /// ICMPv6 neighbour solicitation or advertisement (type 135 or 136, code 0)
    Nd,
    /// ICMPv6 neighbour solicitation (type 135, code 0)
    NdSolicit,
    /// ICMPv6 neighbour advertisement (type 136, code 0)
    NdAdvert,
    /// eth_type = 0x8847 or 0x8848 (MPLS unicast or multicast)
    Mpls,
    /// A packet of a valid connection (Open vSwitch's "CT"): a match must
    /// say one of ct_state's new, est, rel, rpl, snat, dnat, or +trk-inv.
    Ct,
}

/// Ethertypes and protocol numbers used by prerequisites.
pub const ETH_TYPE_IP: u64 = 0x0800;
pub const ETH_TYPE_ARP: u64 = 0x0806;
pub const ETH_TYPE_IPV6: u64 = 0x86dd;
pub const ETH_TYPE_VLAN: u64 = 0x8100;
pub const ETH_TYPE_MPLS: u64 = 0x8847;
pub const ETH_TYPE_MPLS_MCAST: u64 = 0x8848;
pub const IPPROTO_ICMP: u64 = 1;
pub const IPPROTO_TCP: u64 = 6;
pub const IPPROTO_UDP: u64 = 17;
pub const IPPROTO_SCTP: u64 = 132;
pub const IPPROTO_ICMPV6: u64 = 58;
/// ICMPv6 neighbour solicitation and advertisement types.
pub const ND_SOLICIT: u64 = 135;
pub const ND_ADVERT: u64 = 136;
/// Bits of an MPLS label stack entry (label << 12 | tc << 9 | bos << 8 | ttl).
pub const MPLS_LABEL_MASK: u32 = 0xffff_f000;
pub const MPLS_TC_MASK: u32 = 0x0000_0e00;
pub const MPLS_BOS_MASK: u32 = 0x0000_0100;
pub const MPLS_TTL_MASK: u32 = 0x0000_00ff;
/// Label stack entries a flow key holds (Open vSwitch's FLOW_MAX_MPLS_LABELS).
pub const MPLS_MAX_LABELS: usize = 3;

/// Is `t` an MPLS ethertype (0x8847 unicast or 0x8848 multicast)?
#[inline]
pub const fn is_mpls_type(t: u64) -> bool {
    t == ETH_TYPE_MPLS || t == ETH_TYPE_MPLS_MCAST
}

/// The VLAN "present" bit of `vlan_tci` (the CFI bit, as Open vSwitch uses it).
pub const VLAN_CFI: u64 = 0x1000;

/// One row of the field table.
#[derive(Clone, Copy, Debug)]
pub struct FieldDef {
    pub id: Field,
    /// Canonical name, as Open vSwitch prints it in megaflows and dump-flows.
    pub name: &'static str,
    /// Other names ovs-ofctl accepts (OXM names, NXM names, old aliases).
    pub aliases: &'static [&'static str],
    pub bits: u32,
    pub fmt: Fmt,
    pub stage: Stage,
    pub prereq: Prereq,
    /// `Some(f)`: this field is a view of the low `bits` bits of `f`'s storage
    /// (as OVS keeps `arp_spa` in `nw_src` and `icmp_type` in `tp_src`).
    pub storage: Option<Field>,
    /// May actions write it (set_field, load, move destination)?
    pub writable: bool,
}

macro_rules! fields {
    ($( $id:ident => $name:literal [$($alias:literal),*] $bits:literal $fmt:ident $stage:ident $prereq:ident $storage:expr, $w:literal; )*) => {
        /// A field of the flow key; the discriminant indexes [`FIELDS`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Field { $($id),* }
        /// The field table, in layout order (grouped by stage).
        pub const FIELDS: &[FieldDef] = &[ $(FieldDef {
            id: Field::$id, name: $name, aliases: &[$($alias),*], bits: $bits,
            fmt: Fmt::$fmt, stage: Stage::$stage, prereq: Prereq::$prereq,
            storage: $storage, writable: $w,
        }),* ];
    };
}

fields! {
    // ---- metadata stage ----
    InPort => "in_port" ["NXM_OF_IN_PORT", "OXM_OF_IN_PORT"] 32 Dec Meta None None, true;
    RecircId => "recirc_id" [] 32 Dec Meta None None, false;
    Metadata => "metadata" ["OXM_OF_METADATA"] 64 Hex Meta None None, true;
    Reg0 => "reg0" ["NXM_NX_REG0"] 32 Hex Meta None None, true;
    Reg1 => "reg1" ["NXM_NX_REG1"] 32 Hex Meta None None, true;
    Reg2 => "reg2" ["NXM_NX_REG2"] 32 Hex Meta None None, true;
    Reg3 => "reg3" ["NXM_NX_REG3"] 32 Hex Meta None None, true;
    Reg4 => "reg4" ["NXM_NX_REG4"] 32 Hex Meta None None, true;
    Reg5 => "reg5" ["NXM_NX_REG5"] 32 Hex Meta None None, true;
    Reg6 => "reg6" ["NXM_NX_REG6"] 32 Hex Meta None None, true;
    Reg7 => "reg7" ["NXM_NX_REG7"] 32 Hex Meta None None, true;
    Reg8 => "reg8" ["NXM_NX_REG8"] 32 Hex Meta None None, true;
    Reg9 => "reg9" ["NXM_NX_REG9"] 32 Hex Meta None None, true;
    Reg10 => "reg10" ["NXM_NX_REG10"] 32 Hex Meta None None, true;
    Reg11 => "reg11" ["NXM_NX_REG11"] 32 Hex Meta None None, true;
    Reg12 => "reg12" ["NXM_NX_REG12"] 32 Hex Meta None None, true;
    Reg13 => "reg13" ["NXM_NX_REG13"] 32 Hex Meta None None, true;
    Reg14 => "reg14" ["NXM_NX_REG14"] 32 Hex Meta None None, true;
    Reg15 => "reg15" ["NXM_NX_REG15"] 32 Hex Meta None None, true;
    PktMark => "pkt_mark" ["NXM_NX_PKT_MARK"] 32 Hex Meta None None, true;
    // The hash a datapath `hash` action computed (0: none yet); a
    // recirculated pass matches its low bits to pick a select group's bucket.
    DpHash => "dp_hash" ["NXM_NX_DP_HASH"] 32 Hex Meta None None, false;
    // Conntrack: the state, zone, mark and label (128 bits, in hex) of the
    // packet's connection and its original direction's tuple, as the
    // datapath's `ct` action fills them in (ordered to pack into words).
    // ct_mark and ct_label are written only inside `ct(exec(...))`.
    CtState => "ct_state" ["NXM_NX_CT_STATE"] 32 CtState Meta None None, false;
    CtZone => "ct_zone" ["NXM_NX_CT_ZONE"] 16 Dec Meta None None, false;
    CtNwProto => "ct_nw_proto" ["NXM_NX_CT_NW_PROTO"] 8 Dec Meta Ct None, false;
    CtMark => "ct_mark" ["NXM_NX_CT_MARK"] 32 Hex Meta None None, true;
    CtTpSrc => "ct_tp_src" ["NXM_NX_CT_TP_SRC"] 16 Dec Meta Ct None, false;
    CtTpDst => "ct_tp_dst" ["NXM_NX_CT_TP_DST"] 16 Dec Meta Ct None, false;
    CtNwSrc => "ct_nw_src" ["NXM_NX_CT_NW_SRC"] 32 Ipv4 Meta Ct None, false;
    CtNwDst => "ct_nw_dst" ["NXM_NX_CT_NW_DST"] 32 Ipv4 Meta Ct None, false;
    CtLabelHi => "ct_label" ["NXM_NX_CT_LABEL"] 64 Ipv6Hi Meta None None, true;
    CtLabelLo => "ct_label[lo]" [] 64 Ipv6Lo Meta None None, true;
    CtIpv6SrcHi => "ct_ipv6_src" ["NXM_NX_CT_IPV6_SRC"] 64 Ipv6Hi Meta Ct None, false;
    CtIpv6SrcLo => "ct_ipv6_src[lo]" [] 64 Ipv6Lo Meta Ct None, false;
    CtIpv6DstHi => "ct_ipv6_dst" ["NXM_NX_CT_IPV6_DST"] 64 Ipv6Hi Meta Ct None, false;
    CtIpv6DstLo => "ct_ipv6_dst[lo]" [] 64 Ipv6Lo Meta Ct None, false;
    TunId => "tun_id" ["tunnel_id", "NXM_NX_TUN_ID", "OXM_OF_TUNNEL_ID"] 64 Hex Meta None None, true;
    TunSrc => "tun_src" ["NXM_NX_TUN_IPV4_SRC"] 32 Ipv4 Meta None None, true;
    TunDst => "tun_dst" ["NXM_NX_TUN_IPV4_DST"] 32 Ipv4 Meta None None, true;
    // The id of the conjunctive match a lookup completed, set only for the
    // second lookup it makes (`conj_id=ID` flows); zero otherwise. Not
    // maskable, read-only, pipeline state: never in a megaflow.
    ConjId => "conj_id" ["NXM_NX_CONJ_ID"] 32 Dec Meta None None, false;
    // ---- L2 stage ----
    EthSrc => "dl_src" ["eth_src", "NXM_OF_ETH_SRC", "OXM_OF_ETH_SRC"] 48 Mac L2 None None, true;
    EthDst => "dl_dst" ["eth_dst", "NXM_OF_ETH_DST", "OXM_OF_ETH_DST"] 48 Mac L2 None None, true;
    EthType => "dl_type" ["eth_type", "NXM_OF_ETH_TYPE", "OXM_OF_ETH_TYPE"] 16 Hex L2 None None, false;
    VlanTci => "vlan_tci" ["NXM_OF_VLAN_TCI"] 16 Hex L2 None None, true;
    // Inner tag of a QinQ frame (Open vSwitch keeps it as vlans[1]; kairo names it).
    VlanTciInner => "vlan_tci_inner" [] 16 Hex L2 None None, false;
    // The top MPLS label stack entry, its four parts in the entry's own bit
    // order (ttl lowest), so the 32 bits from MplsTtl up are the LSE as on
    // the wire (see `FlowKey::mpls_lse`).
    MplsTtl => "mpls_ttl" ["NXM_NX_MPLS_TTL"] 8 Dec L2 Mpls None, true;
    MplsBos => "mpls_bos" ["OXM_OF_MPLS_BOS"] 1 Dec L2 Mpls None, false;
    MplsTc => "mpls_tc" ["OXM_OF_MPLS_TC"] 3 Dec L2 Mpls None, true;
    MplsLabel => "mpls_label" ["OXM_OF_MPLS_LABEL"] 20 Dec L2 Mpls None, true;
    // The second and third entries, whole (Open vSwitch's mpls_lse[1..2]:
    // not matchable from OpenFlow; megaflows and pops use them).
    MplsLse1 => "mpls_lse1" [] 32 Hex L2 Mpls None, false;
    MplsLse2 => "mpls_lse2" [] 32 Hex L2 Mpls None, false;
    // ---- L3 stage ----
    IpSrc => "nw_src" ["ip_src", "NXM_OF_IP_SRC", "OXM_OF_IPV4_SRC", "ipv4_src"] 32 Ipv4 L3 Ipv4 None, true;
    IpDst => "nw_dst" ["ip_dst", "NXM_OF_IP_DST", "OXM_OF_IPV4_DST", "ipv4_dst"] 32 Ipv4 L3 Ipv4 None, true;
    IpProto => "nw_proto" ["ip_proto", "NXM_OF_IP_PROTO", "OXM_OF_IP_PROTO"] 8 Dec L3 Ip None, false;
    IpDscp => "ip_dscp" ["OXM_OF_IP_DSCP"] 6 Dec L3 Ip None, true;
    IpEcn => "nw_ecn" ["ip_ecn", "NXM_NX_IP_ECN", "OXM_OF_IP_ECN"] 2 Dec L3 Ip None, true;
    IpTtl => "nw_ttl" ["ip_ttl", "NXM_NX_IP_TTL"] 8 Dec L3 Ip None, true;
    IpFrag => "nw_frag" ["ip_frag", "NXM_NX_IP_FRAG"] 2 Frag L3 Ip None, false;
    Ipv6Label => "ipv6_label" ["NXM_NX_IPV6_LABEL", "OXM_OF_IPV6_FLABEL"] 20 Hex L3 Ipv6 None, true;
    ArpSha => "arp_sha" ["NXM_NX_ARP_SHA", "OXM_OF_ARP_SHA"] 48 Mac L3 Arp None, true;
    ArpTha => "arp_tha" ["NXM_NX_ARP_THA", "OXM_OF_ARP_THA"] 48 Mac L3 Arp None, true;
    ArpOp => "arp_op" ["NXM_OF_ARP_OP", "OXM_OF_ARP_OP"] 8 Dec L3 Arp Some(Field::IpProto), true;
    ArpSpa => "arp_spa" ["NXM_OF_ARP_SPA", "OXM_OF_ARP_SPA"] 32 Ipv4 L3 Arp Some(Field::IpSrc), true;
    ArpTpa => "arp_tpa" ["NXM_OF_ARP_TPA", "OXM_OF_ARP_TPA"] 32 Ipv4 L3 Arp Some(Field::IpDst), true;
    // Neighbour discovery link-layer options share the ARP hardware addresses (as in OVS).
    NdSll => "nd_sll" ["NXM_NX_ND_SLL", "OXM_OF_IPV6_ND_SLL"] 48 Mac L3 NdSolicit Some(Field::ArpSha), true;
    NdTll => "nd_tll" ["NXM_NX_ND_TLL", "OXM_OF_IPV6_ND_TLL"] 48 Mac L3 NdAdvert Some(Field::ArpTha), true;
    Ipv6SrcHi => "ipv6_src" ["NXM_NX_IPV6_SRC", "OXM_OF_IPV6_SRC"] 64 Ipv6Hi L3 Ipv6 None, true;
    Ipv6SrcLo => "ipv6_src[lo]" [] 64 Ipv6Lo L3 Ipv6 None, true;
    Ipv6DstHi => "ipv6_dst" ["NXM_NX_IPV6_DST", "OXM_OF_IPV6_DST"] 64 Ipv6Hi L3 Ipv6 None, true;
    Ipv6DstLo => "ipv6_dst[lo]" [] 64 Ipv6Lo L3 Ipv6 None, true;
    NdTargetHi => "nd_target" ["NXM_NX_ND_TARGET", "OXM_OF_IPV6_ND_TARGET"] 64 Ipv6Hi L3 Nd None, true;
    NdTargetLo => "nd_target[lo]" [] 64 Ipv6Lo L3 Nd None, true;
    // ---- L4 stage ----
    TpSrc => "tp_src" ["tcp_src", "udp_src", "sctp_src", "NXM_OF_TCP_SRC", "NXM_OF_UDP_SRC", "OXM_OF_TCP_SRC", "OXM_OF_UDP_SRC"] 16 Dec L4 L4 None, true;
    TpDst => "tp_dst" ["tcp_dst", "udp_dst", "sctp_dst", "NXM_OF_TCP_DST", "NXM_OF_UDP_DST", "OXM_OF_TCP_DST", "OXM_OF_UDP_DST"] 16 Dec L4 L4 None, true;
    TcpFlags => "tcp_flags" ["NXM_NX_TCP_FLAGS", "OXM_OF_TCP_FLAGS"] 12 TcpFlags L4 Tcp None, false;
    IcmpType => "icmp_type" ["icmpv4_type", "NXM_OF_ICMP_TYPE", "OXM_OF_ICMPV4_TYPE"] 8 Dec L4 Icmp Some(Field::TpSrc), true;
    IcmpCode => "icmp_code" ["icmpv4_code", "NXM_OF_ICMP_CODE", "OXM_OF_ICMPV4_CODE"] 8 Dec L4 Icmp Some(Field::TpDst), true;
    Icmpv6Type => "icmpv6_type" ["NXM_NX_ICMPV6_TYPE", "OXM_OF_ICMPV6_TYPE"] 8 Dec L4 Icmpv6 Some(Field::TpSrc), true;
    Icmpv6Code => "icmpv6_code" ["NXM_NX_ICMPV6_CODE", "OXM_OF_ICMPV6_CODE"] 8 Dec L4 Icmpv6 Some(Field::TpDst), true;
}

/// The registers, reg0..reg15.
pub const REGS: [Field; 16] = [
    Field::Reg0,
    Field::Reg1,
    Field::Reg2,
    Field::Reg3,
    Field::Reg4,
    Field::Reg5,
    Field::Reg6,
    Field::Reg7,
    Field::Reg8,
    Field::Reg9,
    Field::Reg10,
    Field::Reg11,
    Field::Reg12,
    Field::Reg13,
    Field::Reg14,
    Field::Reg15,
];

/// Where a field lives: word index, bit shift within the word, and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub word: usize,
    pub shift: u32,
    pub bits: u32,
}

const fn compute_layout() -> ([Place; FIELDS.len()], usize, [usize; N_STAGES + 1]) {
    let mut out = [Place { word: 0, shift: 0, bits: 0 }; FIELDS.len()];
    let mut stage_start = [0usize; N_STAGES + 1];
    let mut word = 0usize;
    let mut used = 0u32; // bits used in `word`
    let mut stage = 0usize;
    let mut i = 0;
    while i < FIELDS.len() {
        let f = &FIELDS[i];
        assert!(f.id as usize == i, "FIELDS must be in Field order");
        assert!(f.bits > 0 && f.bits <= 64);
        let s = f.stage as usize;
        assert!(s >= stage, "FIELDS must be grouped by stage in stage order");
        while stage < s {
            // Start every stage on a fresh word.
            if used > 0 {
                word += 1;
                used = 0;
            }
            stage += 1;
            stage_start[stage] = word;
        }
        match f.storage {
            Some(st) => {
                let p = out[st as usize];
                assert!((st as usize) < i && f.bits <= p.bits);
                out[i] = Place { word: p.word, shift: p.shift, bits: f.bits };
            }
            None => {
                if used + f.bits > 64 {
                    word += 1;
                    used = 0;
                }
                out[i] = Place { word, shift: used, bits: f.bits };
                used += f.bits;
            }
        }
        i += 1;
    }
    if used > 0 {
        word += 1;
    }
    while stage < N_STAGES {
        stage += 1;
        stage_start[stage] = word;
    }
    stage_start[N_STAGES] = word;
    (out, word, stage_start)
}

const LAYOUT: ([Place; FIELDS.len()], usize, [usize; N_STAGES + 1]) = compute_layout();
/// Placement of every field, indexed by `Field as usize`.
pub const PLACEMENT: [Place; FIELDS.len()] = LAYOUT.0;
/// Number of 64-bit words in a key.
pub const WORDS: usize = LAYOUT.1;
/// `STAGE_WORDS[s]..STAGE_WORDS[s + 1]` are the words of stage `s`.
pub const STAGE_WORDS: [usize; N_STAGES + 1] = LAYOUT.2;

impl Field {
    #[inline]
    pub fn def(self) -> &'static FieldDef {
        &FIELDS[self as usize]
    }
    #[inline]
    pub fn place(self) -> Place {
        PLACEMENT[self as usize]
    }
    #[inline]
    pub fn name(self) -> &'static str {
        self.def().name
    }
    #[inline]
    pub fn bits(self) -> u32 {
        self.def().bits
    }
    /// All-ones value of this field's width.
    #[inline]
    pub fn ones(self) -> u64 {
        let b = self.bits();
        if b == 64 {
            u64::MAX
        } else {
            (1u64 << b) - 1
        }
    }
    /// Looks a field up by any of its names (case-sensitive for the short names,
    /// as ovs-ofctl; NXM/OXM names are upper case). A 128-bit field's name
    /// gives its high half ([`Field::wide`] gives both).
    pub fn from_name(name: &str) -> Option<Field> {
        FIELDS.iter().find(|d| d.fmt != Fmt::Ipv6Lo && (d.name == name || d.aliases.contains(&name))).map(|d| d.id)
    }
    /// For the high half of a 128-bit field, the (high, low) pair.
    #[inline]
    pub fn wide(self) -> Option<(Field, Field)> {
        match self {
            Field::Ipv6SrcHi => Some((Field::Ipv6SrcHi, Field::Ipv6SrcLo)),
            Field::Ipv6DstHi => Some((Field::Ipv6DstHi, Field::Ipv6DstLo)),
            Field::NdTargetHi => Some((Field::NdTargetHi, Field::NdTargetLo)),
            Field::CtLabelHi => Some((Field::CtLabelHi, Field::CtLabelLo)),
            Field::CtIpv6SrcHi => Some((Field::CtIpv6SrcHi, Field::CtIpv6SrcLo)),
            Field::CtIpv6DstHi => Some((Field::CtIpv6DstHi, Field::CtIpv6DstLo)),
            _ => None,
        }
    }
    /// For either half of a 128-bit field: the high half (which carries the
    /// field's name) and where this half's bits start in the 128 (64 for the
    /// high half, 0 for the low one).
    #[inline]
    pub fn half_of(self) -> Option<(Field, u32)> {
        match self {
            Field::Ipv6SrcHi
            | Field::Ipv6DstHi
            | Field::NdTargetHi
            | Field::CtLabelHi
            | Field::CtIpv6SrcHi
            | Field::CtIpv6DstHi => Some((self, 64)),
            Field::Ipv6SrcLo => Some((Field::Ipv6SrcHi, 0)),
            Field::Ipv6DstLo => Some((Field::Ipv6DstHi, 0)),
            Field::NdTargetLo => Some((Field::NdTargetHi, 0)),
            Field::CtLabelLo => Some((Field::CtLabelHi, 0)),
            Field::CtIpv6SrcLo => Some((Field::CtIpv6SrcHi, 0)),
            Field::CtIpv6DstLo => Some((Field::CtIpv6DstHi, 0)),
            _ => None,
        }
    }
    /// The low half of the wide field whose high half is `hi` (`hi` itself
    /// for a field that is not wide).
    #[inline]
    pub fn wide_low(hi: Field) -> Field {
        match hi.wide() {
            Some((_, lo)) => lo,
            None => hi,
        }
    }
    /// Is this the low half of a 128-bit field (never named or printed alone)?
    #[inline]
    pub fn is_wide_low(self) -> bool {
        self.def().fmt == Fmt::Ipv6Lo
    }
    /// Every field, in layout order.
    pub fn all() -> impl Iterator<Item = Field> {
        FIELDS.iter().map(|d| d.id)
    }
    /// Registers reg0..reg15 by index.
    pub fn reg(i: usize) -> Option<Field> {
        REGS.get(i).copied()
    }
    /// Is this field pipeline state only (registers, metadata, conj_id), zero whenever a
    /// packet enters the pipeline and never seen by the datapath?
    pub fn pipeline_only(self) -> bool {
        self == Field::Metadata || self == Field::ConjId || (Field::Reg0 <= self && self <= Field::Reg15)
    }
    /// Is this field carried by the packet in the datapath (as opposed to
    /// pipeline metadata such as registers)? Only these need commit actions.
    pub fn in_packet(self) -> bool {
        !matches!(self.def().stage, Stage::Meta) || matches!(self, Field::InPort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_order_and_stages_are_contiguous() {
        for (i, d) in FIELDS.iter().enumerate() {
            assert_eq!(d.id as usize, i);
            let p = PLACEMENT[i];
            let s = d.stage as usize;
            assert!(p.word >= STAGE_WORDS[s] && p.word < STAGE_WORDS[s + 1], "{}", d.name);
            assert!(p.shift + p.bits <= 64);
        }
        assert_eq!(STAGE_WORDS[N_STAGES], WORDS);
    }

    #[test]
    fn fields_with_own_storage_do_not_overlap() {
        for a in FIELDS.iter().filter(|d| d.storage.is_none()) {
            for b in FIELDS.iter().filter(|d| d.storage.is_none()) {
                if a.id == b.id {
                    continue;
                }
                let (pa, pb) = (a.id.place(), b.id.place());
                if pa.word == pb.word {
                    let ra = pa.shift..pa.shift + pa.bits;
                    assert!(ra.end <= pb.shift || pb.shift + pb.bits <= ra.start);
                }
            }
        }
    }

    #[test]
    fn names_and_aliases_resolve() {
        assert_eq!(Field::from_name("dl_dst"), Some(Field::EthDst));
        assert_eq!(Field::from_name("eth_dst"), Some(Field::EthDst));
        assert_eq!(Field::from_name("ip_src"), Some(Field::IpSrc));
        assert_eq!(Field::from_name("NXM_NX_REG3"), Some(Field::Reg3));
        assert_eq!(Field::from_name("udp_dst"), Some(Field::TpDst));
        assert_eq!(Field::from_name("nw_ttl"), Some(Field::IpTtl));
        assert_eq!(Field::from_name("icmp_type"), Some(Field::IcmpType));
        assert_eq!(Field::from_name("bogus"), None);
        // every name is unique
        let mut seen = std::collections::HashSet::new();
        for d in FIELDS {
            assert!(seen.insert(d.name));
            for a in d.aliases {
                assert!(seen.insert(a), "duplicate name {a}");
            }
        }
    }
}

//! Printing keys, matches and megaflows in Open vSwitch notation.
//!
//! Invariant: what is printed parses back ([`crate::parse_match`]) to the same
//! match, so a dump can be pasted into a flow file.

use crate::field::*;
use crate::key::{FlowKey, FlowMask, Match};
use crate::parse::{format_field_value, format_wide_value};

fn exact(m: &Match, f: Field) -> Option<u64> {
    let (v, mk) = m.field(f);
    (mk == f.ones()).then_some(v)
}

/// Formats a match: protocol shorthand first (`ip`, `tcp`, `arp`...), then
/// the constrained fields in field-table order. `eth_prefix` adds Open
/// vSwitch's `eth,` packet-type marker used in megaflows.
pub fn format_match_with(m: &Match, eth_prefix: bool, leading: &[Field]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut done_type = false;
    let mut done_proto = false;
    for &f in leading {
        let (v, mk) = m.field(f);
        if mk != 0 {
            parts.push(format!("{}={}", f.name(), format_field_value(f, v, mk)));
        }
    }
    if eth_prefix {
        parts.push("eth".into());
    }
    match exact(m, Field::EthType) {
        Some(ETH_TYPE_IP) => {
            done_type = true;
            let name = match exact(m, Field::IpProto) {
                Some(IPPROTO_TCP) => Some("tcp"),
                Some(IPPROTO_UDP) => Some("udp"),
                Some(IPPROTO_ICMP) => Some("icmp"),
                Some(IPPROTO_SCTP) => Some("sctp"),
                _ => None,
            };
            done_proto = name.is_some();
            parts.push(name.unwrap_or("ip").into());
        }
        Some(ETH_TYPE_IPV6) => {
            done_type = true;
            let name = match exact(m, Field::IpProto) {
                Some(IPPROTO_TCP) => Some("tcp6"),
                Some(IPPROTO_UDP) => Some("udp6"),
                Some(IPPROTO_ICMPV6) => Some("icmp6"),
                Some(IPPROTO_SCTP) => Some("sctp6"),
                _ => None,
            };
            done_proto = name.is_some();
            parts.push(name.unwrap_or("ipv6").into());
        }
        Some(ETH_TYPE_ARP) => {
            done_type = true;
            parts.push("arp".into());
        }
        Some(ETH_TYPE_MPLS) => {
            done_type = true;
            parts.push("mpls".into());
        }
        Some(ETH_TYPE_MPLS_MCAST) => {
            done_type = true;
            parts.push("mplsm".into());
        }
        _ => {}
    }
    let is_arp = exact(m, Field::EthType) == Some(ETH_TYPE_ARP);
    let is_mpls = exact(m, Field::EthType).is_some_and(is_mpls_type);
    let is_mpls_field = |f: Field| {
        matches!(
            f,
            Field::MplsLabel | Field::MplsTc | Field::MplsBos | Field::MplsTtl | Field::MplsLse1 | Field::MplsLse2
        )
    };
    let is_icmp = exact(m, Field::IpProto) == Some(IPPROTO_ICMP) && exact(m, Field::EthType) == Some(ETH_TYPE_IP);
    let is_icmp6 = exact(m, Field::IpProto) == Some(IPPROTO_ICMPV6) && exact(m, Field::EthType) == Some(ETH_TYPE_IPV6);
    // Neighbour discovery: the ARP hardware-address storage holds nd_sll / nd_tll.
    let is_nd = is_icmp6 && matches!(exact(m, Field::Icmpv6Type), Some(ND_SOLICIT | ND_ADVERT));
    // Table order, but the top label stack entry's parts in Open vSwitch's
    // order (label, tc, ttl, bos) rather than their bit order.
    let order = FIELDS.iter().map(|d| match d.id {
        Field::MplsTtl => Field::MplsLabel,
        Field::MplsBos => Field::MplsTc,
        Field::MplsTc => Field::MplsTtl,
        Field::MplsLabel => Field::MplsBos,
        f => f,
    });
    for f in order {
        if leading.contains(&f) || (f == Field::EthType && done_type) || (f == Field::IpProto && done_proto) {
            continue;
        }
        // Under MPLS labels no L3 or L4 header shows (a flow may keep one
        // there for a later pop); without an MPLS ethertype there are no
        // labels (a megaflow may hold them exact at zero).
        if is_mpls && f.def().stage >= Stage::L3 {
            continue;
        }
        if !is_mpls && is_mpls_field(f) && m.field(f).0 == 0 {
            continue;
        }
        // Shared storage: print under the name the protocol uses.
        let shown = match f {
            Field::IpSrc | Field::IpDst | Field::IpProto if is_arp => continue,
            Field::ArpOp | Field::ArpSpa | Field::ArpTpa if !is_arp => continue,
            Field::ArpSha | Field::ArpTha if is_nd => continue,
            Field::NdSll | Field::NdTll if !is_nd => continue,
            Field::TpSrc | Field::TpDst if is_icmp || is_icmp6 => continue,
            // ICMPv6 type and code print as icmp_type / icmp_code, as in OVS.
            Field::IcmpType | Field::IcmpCode if !is_icmp && !is_icmp6 => continue,
            Field::Icmpv6Type | Field::Icmpv6Code => continue,
            _ if f.is_wide_low() => continue,
            _ => f,
        };
        if shown.wide().is_some() {
            let (v, mk) = m.wide_field(shown);
            if mk != 0 {
                parts.push(format!("{}={}", shown.name(), format_wide_value(shown, v, mk)));
            }
            continue;
        }
        let (v, mk) = m.field(shown);
        if mk == 0 {
            continue;
        }
        match shown {
            Field::VlanTci if mk & 0x1fff == 0x1fff && v & VLAN_CFI != 0 => {
                parts.push(format!("dl_vlan={}", v & 0xfff));
                if mk & 0xe000 == 0xe000 {
                    parts.push(format!("dl_vlan_pcp={}", v >> 13));
                } else if mk & 0xe000 != 0 {
                    parts.push(format!("vlan_tci={:#06x}/{:#06x}", v & 0xe000, mk & 0xe000));
                }
            }
            Field::VlanTci => parts.push(format!("vlan_tci={v:#06x}/{mk:#06x}")),
            Field::IpDscp if mk == 0x3f => parts.push(format!("nw_tos={}", v << 2)),
            _ => parts.push(format!("{}={}", shown.name(), format_field_value(shown, v, mk))),
        }
    }
    parts.join(",")
}

/// Formats a rule's match as ovs-ofctl dump-flows does.
pub fn format_match(m: &Match) -> String {
    format_match_with(m, false, &[])
}

/// Formats a megaflow as `ofproto/trace` prints it (`recirc_id=0,eth,tcp,in_port=1,...`).
pub fn format_megaflow(key: &FlowKey, mask: &FlowMask) -> String {
    format_match_with(&Match::new(*key, *mask), true, &[Field::RecircId, Field::DpHash])
}

/// Formats a packet key (all non-zero fields, plus the protocol).
pub fn format_key(k: &FlowKey) -> String {
    let mut mask = FlowMask::ZERO;
    for f in Field::all() {
        if k.get(f) != 0 {
            mask.exact(f);
        }
    }
    mask.exact(Field::InPort);
    if k.is_ip() {
        mask.exact(Field::IpProto);
    }
    for f in Field::all().filter(|f| f.wide().is_some()) {
        if k.get_wide(f) != 0 {
            mask.or_wide(f, u128::MAX);
        }
    }
    format_match_with(&Match::new(*k, mask), false, &[])
}

//! Committing the logical flow to the datapath packet: the set actions that
//! turn the packet as the datapath has it into the flow translation holds,
//! emitted only before an output (as `ofproto-dpif-xlate.c` commits).
//!
//! Invariant: after [`commit`], the packet equals the flow in every field a
//! packet carries; only fields that differ get a set action, in Open
//! vSwitch's order (Ethernet, VLAN, IPv4/IPv6/ARP, ND, L4 ports, ICMP, MPLS;
//! MPLS pops that uncover a non-MPLS packet come before its L3 sets).

use kairo_flow::field::{
    is_mpls_type, Field, ETH_TYPE_ARP, ETH_TYPE_MPLS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP, MPLS_BOS_MASK, MPLS_MAX_LABELS, ND_ADVERT, ND_SOLICIT, VLAN_CFI,
};
use kairo_flow::FlowKey;
use kairo_odp::{packet_mask, DpAction};

/// Emits, into `out`, the actions that turn packet `base` into `flow` (Open
/// vSwitch's commit order: Ethernet, VLAN, IPv4/ARP, L4), and makes `base`
/// equal `flow` in every packet field. Only fields that differ are set.
pub fn commit(base: &mut FlowKey, flow: &FlowKey, out: &mut Vec<DpAction>) {
    let diff = |f: Field| (base.get(f) != flow.get(f)).then(|| flow.get(f));
    let (src, dst) = (diff(Field::EthSrc), diff(Field::EthDst));
    if src.is_some() || dst.is_some() {
        out.push(DpAction::SetEth { src, dst });
    }
    // VLAN tags, outermost first: pop what differs from the innermost up, push the new ones.
    let tags = |k: &FlowKey| {
        let t = [k.get(Field::VlanTci), k.get(Field::VlanTciInner)];
        let n = t.iter().take_while(|t| *t & VLAN_CFI != 0).count();
        (t, n)
    };
    let ((bt, bn), (ft, fn_)) = (tags(base), tags(flow));
    let (bt, ft) = (&bt[..bn], &ft[..fn_]);
    if bt != ft {
        let common = bt.iter().rev().zip(ft.iter().rev()).take_while(|(a, b)| a == b).count();
        for _ in 0..bt.len() - common {
            out.push(DpAction::PopVlan);
        }
        for t in ft[..ft.len() - common].iter().rev() {
            out.push(DpAction::PushVlan { vid: (t & 0xfff) as u16, pcp: (t >> 13) as u8 });
        }
    }
    // Out of MPLS first, so that the L3 sets apply to the uncovered header.
    let unlabel = base.is_mpls() && !flow.is_mpls();
    if unlabel {
        commit_mpls(base, flow, out);
    }
    // The TOS / traffic class byte: (value, mask) over what differs.
    let tos = || {
        let mut tmask = 0u8;
        if base.get(Field::IpDscp) != flow.get(Field::IpDscp) {
            tmask |= 0xfc;
        }
        if base.get(Field::IpEcn) != flow.get(Field::IpEcn) {
            tmask |= 0x03;
        }
        (tmask != 0).then(|| (((flow.get(Field::IpDscp) << 2 | flow.get(Field::IpEcn)) as u8) & tmask, tmask))
    };
    if flow.is_ip() {
        let ttl = diff(Field::IpTtl).map(|v| v as u8);
        let tos = tos();
        if flow.is_ipv4() {
            let src = diff(Field::IpSrc).map(|v| v as u32);
            let dst = diff(Field::IpDst).map(|v| v as u32);
            if src.is_some() || dst.is_some() || ttl.is_some() || tos.is_some() {
                out.push(DpAction::SetIpv4 { src, dst, tos, ttl });
            }
        } else {
            let wide = |hi: Field| (base.get_wide(hi) != flow.get_wide(hi)).then(|| flow.get_wide(hi));
            let (src, dst) = (wide(Field::Ipv6SrcHi), wide(Field::Ipv6DstHi));
            let label = diff(Field::Ipv6Label).map(|v| v as u32);
            if src.is_some() || dst.is_some() || label.is_some() || ttl.is_some() || tos.is_some() {
                out.push(DpAction::SetIpv6 { src, dst, label, tclass: tos, hlimit: ttl });
            }
            let nd = flow.get(Field::IpProto) == IPPROTO_ICMPV6
                && flow.get(Field::Icmpv6Code) == 0
                && matches!(flow.get(Field::Icmpv6Type), ND_SOLICIT | ND_ADVERT);
            if nd {
                let target = wide(Field::NdTargetHi);
                let (sll, tll) = (diff(Field::NdSll), diff(Field::NdTll));
                if target.is_some() || sll.is_some() || tll.is_some() {
                    out.push(DpAction::SetNd { target, sll, tll });
                }
            }
        }
        let proto = flow.get(Field::IpProto);
        if matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
            let (s, d) = (diff(Field::TpSrc).map(|v| v as u16), diff(Field::TpDst).map(|v| v as u16));
            if s.is_some() || d.is_some() {
                out.push(DpAction::SetL4 { proto: proto as u8, src: s, dst: d });
            }
        } else if proto == IPPROTO_ICMP && flow.is_ipv4() {
            let (t, c) = (diff(Field::IcmpType).map(|v| v as u8), diff(Field::IcmpCode).map(|v| v as u8));
            if t.is_some() || c.is_some() {
                out.push(DpAction::SetIcmp { ty: t, code: c });
            }
        } else if proto == IPPROTO_ICMPV6 && flow.is_ipv6() {
            let (t, c) = (diff(Field::Icmpv6Type).map(|v| v as u8), diff(Field::Icmpv6Code).map(|v| v as u8));
            if t.is_some() || c.is_some() {
                out.push(DpAction::SetIcmpv6 { ty: t, code: c });
            }
        }
    } else if flow.get(Field::EthType) == ETH_TYPE_ARP {
        let sip = diff(Field::ArpSpa).map(|v| v as u32);
        let tip = diff(Field::ArpTpa).map(|v| v as u32);
        let op = diff(Field::ArpOp).map(|v| v as u8);
        let (sha, tha) = (diff(Field::ArpSha), diff(Field::ArpTha));
        if sip.is_some() || tip.is_some() || op.is_some() || sha.is_some() || tha.is_some() {
            out.push(DpAction::SetArp { sip, tip, op, sha, tha });
        }
    }
    if !unlabel {
        commit_mpls(base, flow, out);
    }
    let m = packet_mask();
    for i in 0..base.w.len() {
        base.w[i] = (base.w[i] & !m.w[i]) | (flow.w[i] & m.w[i]);
    }
}

/// The label stack entries of `k` (Open vSwitch's `flow_count_mpls_labels`).
pub(crate) fn mpls_labels(k: &FlowKey) -> usize {
    if !k.is_mpls() {
        return 0;
    }
    let mut n = 0;
    for i in 0..MPLS_MAX_LABELS {
        let lse = k.mpls_lse(i);
        if lse & MPLS_BOS_MASK != 0 {
            return i + 1;
        }
        n += usize::from(lse != 0);
    }
    n
}

/// Pops, sets and pushes label stack entries until the packet's stack is
/// the flow's, keeping the entries both share at the bottom (Open vSwitch's
/// `commit_mpls_action`); [`commit`] then gives `base` the flow's stack.
fn commit_mpls(base: &FlowKey, flow: &FlowKey, out: &mut Vec<DpAction>) {
    let (mut bn, fnn) = (mpls_labels(base), mpls_labels(flow));
    let mut common = (0..bn.min(fnn)).take_while(|&i| base.mpls_lse(bn - 1 - i) == flow.mpls_lse(fnn - 1 - i)).count();
    let eth = flow.get(Field::EthType) as u16;
    while bn > common {
        if bn - 1 == common && fnn > common {
            // One entry more than shared, and the flow has one there: set it.
            let lse = flow.mpls_lse(fnn - bn);
            out.push(DpAction::SetMpls { lse });
            common += 1;
        } else {
            // Popping the last entry gives the flow's ethertype; an entry
            // with more below keeps the packet MPLS.
            let ethertype = if !is_mpls_type(u64::from(eth)) && bn > 1 { ETH_TYPE_MPLS as u16 } else { eth };
            out.push(DpAction::PopMpls { ethertype });
            bn -= 1;
        }
    }
    while bn < fnn {
        let lse = flow.mpls_lse(fnn - bn - 1);
        out.push(DpAction::PushMpls { lse, ethertype: eth });
        bn += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kairo_odp::format_actions;

    #[test]
    fn commit_sets_only_what_changed() {
        let mut base = kairo_flow::parse_key("in_port=1,tcp,nw_dst=10.0.0.1,nw_ttl=64,tp_dst=80").unwrap();
        let mut flow = base;
        flow.set(Field::IpTtl, 63);
        flow.set(Field::TpDst, 8080);
        flow.set(Field::VlanTci, VLAN_CFI | 5);
        let mut out = Vec::new();
        commit(&mut base, &flow, &mut out);
        assert_eq!(format_actions(&out), "push_vlan(vid=5,pcp=0),set(ipv4(ttl=63)),set(tcp(dst=8080))");
        out.clear();
        commit(&mut base, &flow, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn commit_ipv6() {
        let mut base =
            kairo_flow::parse_key("in_port=1,icmp6,icmp_type=135,ipv6_dst=ff02::1:ff00:1,nw_ttl=255,nd_target=fe80::1")
                .unwrap();
        let mut flow = base;
        flow.set_wide(Field::Ipv6SrcHi, 0xfe80 << 112 | 7);
        flow.set(Field::IpTtl, 254);
        flow.set(Field::NdSll, 0x0a);
        flow.set(Field::Icmpv6Code, 1);
        let mut out = Vec::new();
        commit(&mut base, &flow, &mut out);
        // A code of 1 is no longer neighbour discovery: no nd() set.
        assert_eq!(format_actions(&out), "set(ipv6(src=fe80::7,hlimit=254)),set(icmpv6(code=1))");
        let mut base = kairo_flow::parse_key("in_port=1,udp6,ipv6_src=::1,tp_dst=53").unwrap();
        let mut flow = base;
        flow.set(Field::TpDst, 5353);
        flow.set(Field::IpEcn, 1);
        out.clear();
        commit(&mut base, &flow, &mut out);
        assert_eq!(format_actions(&out), "set(ipv6(tclass=0x1/0x3)),set(udp(dst=5353))");
    }
}

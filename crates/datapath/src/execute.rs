//! Executing datapath actions on a packet buffer.
//!
//! Invariant: the packet each output sends is the input with exactly the
//! preceding set/push/pop actions applied, checksums kept right (see
//! [`kairo_wire::rewrite`]); `kairo_odp::apply` describes the same
//! effect on keys, and tests check the two agree.

use crate::meter::Meters;
use kairo_conntrack::{Conntrack, CtMeta};
use kairo_odp::{ControllerReason, DpAction};
use kairo_wire::rewrite as rw;
use kairo_wire::Layout;

/// Where a packet goes: a port, the controller with what a PACKET_IN
/// says about it, or back into the datapath (recirculation: looked up
/// again with `recirc_id` and the `dp_hash` a `hash` action set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    Port(u32),
    Controller(ToController),
    Recirc { in_port: u32, recirc_id: u32, meta: PacketMeta },
}

/// What a packet carries through the datapath besides its bytes: the hash
/// a `hash` action set and the connection a `ct` action found (both looked
/// up again on recirculation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    pub dp_hash: u32,
    pub ct: CtMeta,
}

/// What executing actions needs besides the packet: the meters, the
/// connection tracker and the time (milliseconds).
pub struct Context<'a> {
    pub meters: &'a Meters,
    pub ct: &'a std::sync::Mutex<Conntrack>,
    pub now: u64,
}

/// `out`, except that a recirculation goes to `again` (for the datapath to
/// run through its caches again) instead.
pub fn recirculating<'a>(
    again: &'a mut Vec<crate::Recirculated>,
    out: &'a mut impl FnMut(Sent, &[u8], &Layout),
) -> impl FnMut(Sent, &[u8], &Layout) + 'a {
    move |to, b, lay| match to {
        Sent::Recirc { in_port, recirc_id, meta } => {
            again.push(crate::Recirculated { bytes: b.to_vec(), in_port, recirc_id, meta, offload: lay.offload })
        }
        to => out(to, b, lay),
    }
}

/// A packet for the controller: the port it came in on, its connection,
/// and the controller action's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToController {
    pub in_port: u32,
    pub reason: ControllerReason,
    pub max_len: u16,
    pub table: u8,
    pub cookie: u64,
    /// The controllers it is for (by controller id).
    pub controller_id: u16,
    /// The pipeline's metadata at the action, and its userdata.
    pub meta: kairo_odp::PacketInMeta,
    /// The connection the tracker found for the packet, if any.
    pub ct: CtMeta,
}

/// Applies `actions` to `pkt` (laid out as `lay`, which came in on
/// `in_port` carrying `meta`), calling `out(where, bytes, layout)` for each
/// output; a meter that drops the packet ends the list. What the packet
/// owes the hardware (`lay.offload`) stays owed: header rewrites keep a
/// partial checksum partial; `ct`, whose NAT rewrites complete checksums,
/// gets it finished, and a super-frame's is made partial again after.
pub fn execute(
    pkt: &mut Vec<u8>,
    lay: &mut Layout,
    in_port: u32,
    mut meta: PacketMeta,
    actions: &[DpAction],
    cx: &mut Context<'_>,
    out: &mut impl FnMut(Sent, &[u8], &Layout),
) {
    for (i, a) in actions.iter().enumerate() {
        match a {
            DpAction::Hash { alg, basis } => {
                meta.dp_hash = kairo_odp::dp_hash(*alg, *basis, &kairo_wire::parse(pkt, in_port).0);
            }
            DpAction::Recirc(id) => out(Sent::Recirc { in_port, recirc_id: *id, meta }, pkt, lay),
            DpAction::Ct(ct) => {
                let req = kairo_conntrack::Request {
                    zone: ct.zone,
                    commit: ct.commit,
                    force: ct.force,
                    mark: ct.mark,
                    label: ct.label,
                    nat: ct.nat.as_ref(),
                };
                kairo_wire::offload::finish_csum(pkt, lay);
                let verdict =
                    cx.ct.lock().unwrap_or_else(|e| e.into_inner()).execute(pkt, in_port, &mut meta.ct, &req, cx.now);
                if lay.offload.gso.is_some() && kairo_wire::offload::make_partial(pkt, lay).is_some() {
                    lay.offload.partial = true;
                }
                match verdict {
                    kairo_conntrack::Verdict::Continue => {}
                    // A fragment waits for the rest of its datagram.
                    kairo_conntrack::Verdict::Held => return,
                    // The datagram is whole: its fragments go on, each
                    // with the rest of the actions.
                    kairo_conntrack::Verdict::Fragments(frags) => {
                        for mut f in frags {
                            let mut flay = kairo_wire::parse(&f, in_port).1;
                            execute(&mut f, &mut flay, in_port, meta, &actions[i + 1..], cx, out);
                        }
                        return;
                    }
                }
            }
            DpAction::CtClear => meta.ct = CtMeta::default(),
            DpAction::CheckPktLen(c) => {
                let branch = c.branch(kairo_wire::offload::wire_len(pkt, lay));
                if i + 1 == actions.len() {
                    return execute(pkt, lay, in_port, meta, branch, cx, out);
                }
                // On a copy: the actions after it see the packet as it was.
                let (mut copy, mut clay) = (pkt.clone(), *lay);
                execute(&mut copy, &mut clay, in_port, meta, branch, cx, out);
            }
            DpAction::Meter(m) => {
                if !cx.meters.admit(*m, pkt.len(), std::time::Instant::now()) {
                    return;
                }
            }
            DpAction::Output(p) => out(Sent::Port(*p), pkt, lay),
            DpAction::Controller { reason, max_len, table, cookie, controller_id, meta: pin } => {
                let c = ToController {
                    in_port,
                    reason: *reason,
                    max_len: *max_len,
                    table: *table,
                    cookie: *cookie,
                    controller_id: *controller_id,
                    meta: (**pin).clone(),
                    ct: meta.ct,
                };
                out(Sent::Controller(c), pkt, lay)
            }
            DpAction::SetEth { src, dst } => {
                if let Some(m) = src {
                    rw::set_eth_src(pkt, *m);
                }
                if let Some(m) = dst {
                    rw::set_eth_dst(pkt, *m);
                }
            }
            // On the wire the CFI/DEI bit is 0; kairo's keys use it as "tag present".
            DpAction::PushVlan { vid, pcp } => rw::push_vlan(pkt, lay, ((*pcp as u16) << 13) | (vid & 0xfff)),
            DpAction::PopVlan => rw::pop_vlan(pkt, lay),
            DpAction::PushMpls { lse, ethertype } => rw::push_mpls(pkt, lay, *lse, *ethertype),
            DpAction::PopMpls { ethertype } => rw::pop_mpls(pkt, lay, *ethertype),
            DpAction::SetMpls { lse } => rw::set_mpls(pkt, lay, *lse),
            DpAction::SetIpv4 { src, dst, tos, ttl } => {
                if let Some(v) = src {
                    rw::set_ipv4_src(pkt, lay, *v);
                }
                if let Some(v) = dst {
                    rw::set_ipv4_dst(pkt, lay, *v);
                }
                if let Some((v, m)) = tos {
                    rw::set_ipv4_tos(pkt, lay, *v, *m);
                }
                if let Some(v) = ttl {
                    rw::set_ipv4_ttl(pkt, lay, *v);
                }
            }
            DpAction::SetIpv6 { src, dst, label, tclass, hlimit } => {
                if let Some(v) = src {
                    rw::set_ipv6_src(pkt, lay, *v);
                }
                if let Some(v) = dst {
                    rw::set_ipv6_dst(pkt, lay, *v);
                }
                if let Some(v) = label {
                    rw::set_ipv6_label(pkt, lay, *v);
                }
                if let Some((v, m)) = tclass {
                    rw::set_ipv6_tclass(pkt, lay, *v, *m);
                }
                if let Some(v) = hlimit {
                    rw::set_ipv6_hlimit(pkt, lay, *v);
                }
            }
            DpAction::SetNd { target, sll, tll } => rw::set_nd(pkt, lay, *target, *sll, *tll),
            DpAction::SetIcmpv6 { ty, code } => rw::set_icmpv6(pkt, lay, *ty, *code),
            DpAction::SetL4 { src, dst, .. } => {
                if let Some(p) = src {
                    rw::set_l4_src(pkt, lay, *p);
                }
                if let Some(p) = dst {
                    rw::set_l4_dst(pkt, lay, *p);
                }
            }
            DpAction::SetIcmp { ty, code } => rw::set_icmp(pkt, lay, *ty, *code),
            DpAction::SetArp { sip, tip, op, sha, tha } => rw::set_arp(pkt, lay, *op, *sha, *sip, *tha, *tip),
        }
    }
}

//! The datapath's `ct` action (Open vSwitch's `OVS_ACTION_ATTR_CT`): what
//! translation asks of the connection tracker, in `ovs-dpctl` notation
//! (`ct(commit,zone=5,mark=0x7/0xffffffff,label=0x3/0xf,nat(dst=10.0.0.9:8080))`),
//! and the model of its effect on a key that `apply` and `kairo trace` use.
//!
//! Invariant: printing and parsing are inverse; the model is Open vSwitch's
//! `ofproto/trace` model (a recirculated pass sees the ct_state it is told,
//! the action's zone, the mark and label bits the action sets, and a NAT to
//! the first address and port of its range), so the two can be compared
//! pass by pass.

use kairo_flow::field::Field;
use kairo_flow::parse::parse_uint;
use kairo_flow::FlowKey;

use crate::nat::{Nat, NatAddrs, NatKind};

/// `ct_state` bits (Open vSwitch's `CS_*`), as the flow crate names them.
pub use kairo_flow::parse::{CS_DNAT, CS_EST, CS_INV, CS_NEW, CS_REL, CS_RPL, CS_SNAT, CS_TRK};

/// The ct_state a recirculated pass sees when nobody said otherwise
/// (`ofproto/trace`'s default: `trk|new`).
pub const DEFAULT_NEXT_STATE: u64 = CS_TRK | CS_NEW;

/// One `ct(...)` datapath action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DpCt {
    pub commit: bool,
    /// Commit, deleting a connection this packet would be the reply of.
    pub force: bool,
    pub zone: u16,
    /// Mark bits to set on the committed connection: (value, mask).
    pub mark: Option<(u32, u32)>,
    /// Label bits to set on the committed connection: (value, mask).
    pub label: Option<(u128, u128)>,
    pub nat: Option<Nat>,
}

impl DpCt {
    /// Bytes of its Netlink encoding (nested attributes: flags, zone,
    /// mark and label with masks, the NAT's nested attributes).
    pub fn netlink_len(&self) -> usize {
        let nat = self.nat.map_or(0, |n| {
            let addrs = match n.addrs {
                Some(NatAddrs::V4(..)) => 16,
                Some(NatAddrs::V6(..)) => 40,
                None => 0,
            };
            4 + 4 + addrs + if n.ports.is_some() { 12 } else { 0 }
        });
        4 + usize::from(self.commit) * 4 + 8 + self.mark.map_or(0, |_| 12) + self.label.map_or(0, |_| 36) + nat
    }

    /// The model's effect on `k` (see the module doc): zone, the mark and
    /// label bits set, the NAT to its range's first address and port, and
    /// ct_state `state`.
    pub fn model(&self, k: &mut FlowKey, state: u64) {
        k.set(Field::CtState, state);
        k.set(Field::CtZone, u64::from(self.zone));
        if let Some((v, m)) = self.mark {
            k.set_masked(Field::CtMark, u64::from(v), u64::from(m));
        }
        if let Some((v, m)) = self.label {
            let old = k.get_wide(Field::CtLabelHi);
            k.set_wide(Field::CtLabelHi, (old & !m) | (v & m));
        }
        let Some(Nat { kind: Some(kind), addrs: Some(addrs), ports, .. }) = self.nat else {
            return;
        };
        let (v4, v6, tp) = match kind {
            NatKind::Src => (Field::IpSrc, Field::Ipv6SrcHi, Field::TpSrc),
            NatKind::Dst => (Field::IpDst, Field::Ipv6DstHi, Field::TpDst),
        };
        match addrs {
            NatAddrs::V4(lo, _) if k.is_ipv4() => k.set(v4, u64::from(lo)),
            NatAddrs::V6(lo, _) if k.is_ipv6() => k.set_wide(v6, lo),
            _ => return,
        }
        if let Some((p, _)) = ports {
            if k.has_ports() {
                k.set(tp, u64::from(p));
            }
        }
    }
}

impl std::fmt::Display for DpCt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut p: Vec<String> = Vec::new();
        if self.force {
            p.push("force_commit".into());
        } else if self.commit {
            p.push("commit".into());
        }
        if self.zone != 0 {
            p.push(format!("zone={}", self.zone));
        }
        if let Some((v, m)) = self.mark {
            p.push(format!("mark={v:#x}/{m:#x}"));
        }
        if let Some((v, m)) = self.label {
            p.push(format!("label={v:#x}/{m:#x}"));
        }
        if let Some(n) = &self.nat {
            p.push(n.to_string());
        }
        if p.is_empty() {
            f.write_str("ct")
        } else {
            write!(f, "ct({})", p.join(","))
        }
    }
}

/// A `v[/m]` pair of hex numbers, the mask all ones when absent.
fn masked<T>(s: &str, parse: impl Fn(&str) -> Option<T>, ones: T) -> Option<(T, T)> {
    match s.split_once('/') {
        Some((v, m)) => Some((parse(v)?, parse(m)?)),
        None => Some((parse(s)?, ones)),
    }
}

fn hex128(s: &str) -> Option<u128> {
    let h = s.strip_prefix("0x")?;
    u128::from_str_radix(h, 16).ok()
}

impl DpCt {
    /// Parses `ct` or `ct(...)` as Open vSwitch prints it; `None` if it is
    /// not that (or names something kairo does not model, such as a helper).
    pub fn parse(t: &str) -> Option<DpCt> {
        if t == "ct" {
            return Some(DpCt::default());
        }
        let inner = t.strip_prefix("ct(")?.strip_suffix(')')?;
        let mut ct = DpCt::default();
        for part in kairo_flow::split_top(inner).ok()? {
            match part.split_once('=') {
                _ if part == "commit" => ct.commit = true,
                _ if part == "force_commit" => {
                    ct.commit = true;
                    ct.force = true
                }
                _ if part == "nat" || part.starts_with("nat(") => {
                    let body = part.strip_prefix("nat(").and_then(|b| b.strip_suffix(')')).unwrap_or("");
                    ct.nat = Some(Nat::parse(body, part).ok()?);
                }
                Some(("zone", z)) => ct.zone = u16::try_from(parse_uint(z)?).ok()?,
                Some(("mark", m)) => {
                    ct.mark = Some(masked(m, |x| parse_uint(x).and_then(|v| u32::try_from(v).ok()), u32::MAX)?)
                }
                Some(("label", l)) => ct.label = Some(masked(l, hex128, u128::MAX)?),
                _ => return None,
            }
        }
        Some(ct)
    }
}

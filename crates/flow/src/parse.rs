//! Reading field values, masks and whole matches in Open vSwitch notation
//! (`in_port=1,tcp,nw_dst=10.0.0.0/8,tp_dst=80`).
//!
//! Invariant: parsing never panics on any input; every rejection is a
//! [`FlowError`] that quotes the offending text and says what was expected.
//! A match that parses satisfies its own prerequisites ([`check_prereqs`]).

use crate::field::*;
use crate::key::{FlowKey, Match};
use crate::FlowError;

/// TCP flag names, as ovs-ofctl spells them.
pub const TCP_FLAG_NAMES: &[(&str, u64)] = &[
    ("fin", 0x001),
    ("syn", 0x002),
    ("rst", 0x004),
    ("psh", 0x008),
    ("ack", 0x010),
    ("urg", 0x020),
    ("ece", 0x040),
    ("cwr", 0x080),
    ("ns", 0x100),
];
/// Connection-tracking state flag names.
/// ct_state bits (Open vSwitch's CS_*).
pub const CS_NEW: u64 = 0x01;
pub const CS_EST: u64 = 0x02;
pub const CS_REL: u64 = 0x04;
pub const CS_RPL: u64 = 0x08;
pub const CS_INV: u64 = 0x10;
pub const CS_TRK: u64 = 0x20;
pub const CS_SNAT: u64 = 0x40;
pub const CS_DNAT: u64 = 0x80;

pub const CT_STATE_NAMES: &[(&str, u64)] = &[
    ("new", 0x01),
    ("est", 0x02),
    ("rel", 0x04),
    ("rpl", 0x08),
    ("inv", 0x10),
    ("trk", 0x20),
    ("snat", 0x40),
    ("dnat", 0x80),
];

/// A set of ct_state flags, as `ofproto/trace --ct-next` takes them:
/// names separated by commas or `|` (`trk,est`), or `+` notation
/// (`+trk+est`); only set flags.
pub fn parse_ct_flags(s: &str) -> Result<u64, FlowError> {
    let bad = || FlowError::BadValue {
        field: "ct_state".into(),
        value: s.to_string(),
        expected: "connection tracking flags such as trk,est or +trk+est (new est rel rpl inv trk snat dnat)".into(),
    };
    let mut v = 0;
    for name in s.split([',', '|', '+']).filter(|n| !n.is_empty()) {
        v |= CT_STATE_NAMES.iter().find(|(n, _)| *n == name).ok_or_else(bad)?.1;
    }
    if v == 0 {
        return Err(bad());
    }
    Ok(v)
}

/// `ip_frag` bits: the packet is a fragment / a later (non-first) fragment.
pub const FRAG_ANY: u64 = 1;
pub const FRAG_LATER: u64 = 2;

/// Parses an unsigned integer in decimal or `0x` hex.
pub fn parse_uint(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() {
            return None;
        }
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse::<u64>().ok()
    }
}

pub fn parse_mac(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut v = 0u64;
    for p in parts {
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        v = (v << 8) | u64::from_str_radix(p, 16).ok()?;
    }
    Some(v)
}

pub fn parse_ipv4(s: &str) -> Option<u64> {
    let a: std::net::Ipv4Addr = s.parse().ok()?;
    Some(u32::from(a) as u64)
}

pub fn parse_ipv6(s: &str) -> Option<u128> {
    let a: std::net::Ipv6Addr = s.parse().ok()?;
    Some(u128::from(a))
}

pub fn format_ipv6(v: u128) -> String {
    std::net::Ipv6Addr::from(v).to_string()
}

/// The prefix length of a 128-bit mask, if it is a CIDR prefix.
pub fn prefix_len128(m: u128) -> Option<u32> {
    let ones = m.count_ones();
    let expect = if ones == 0 { 0 } else { u128::MAX << (128 - ones) };
    (m == expect).then_some(ones)
}

/// The 128-bit mask of a prefix of `len` bits (0..=128).
pub fn prefix_mask128(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    }
}

pub fn format_mac(v: u64) -> String {
    let b = v.to_be_bytes();
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[2], b[3], b[4], b[5], b[6], b[7])
}

pub fn format_ipv4(v: u64) -> String {
    std::net::Ipv4Addr::from(v as u32).to_string()
}

/// If `m` (of `bits` width) is a CIDR prefix mask, its length.
pub fn prefix_len(m: u64, bits: u32) -> Option<u32> {
    let ones = m.count_ones();
    let full = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
    let expect = if ones == 0 { 0 } else { (full >> (bits - ones)) << (bits - ones) };
    (m == expect).then_some(ones)
}

/// Mask of the top `len` bits of a `bits`-wide field.
pub fn prefix_mask(len: u32, bits: u32) -> u64 {
    if len == 0 {
        0
    } else {
        let full = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
        (full >> (bits - len)) << (bits - len)
    }
}

fn bad(field: &str, value: &str, expected: &str) -> FlowError {
    FlowError::BadValue { field: field.to_string(), value: value.to_string(), expected: expected.to_string() }
}

fn parse_flags(field: Field, s: &str, names: &[(&str, u64)]) -> Result<(u64, u64), FlowError> {
    // "+syn-ack", "+trk+est"
    let mut v = 0;
    let mut m = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let sign = rest.as_bytes()[0];
        if sign != b'+' && sign != b'-' {
            return Err(bad(field.name(), s, "flags as +name-name (or a number)"));
        }
        rest = &rest[1..];
        let end = rest.find(['+', '-']).unwrap_or(rest.len());
        let name = &rest[..end];
        let bit = names.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).ok_or_else(|| {
            bad(
                field.name(),
                s,
                &format!("flag names among {}", names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
            )
        })?;
        m |= bit;
        if sign == b'+' {
            v |= bit;
        }
        rest = &rest[end..];
    }
    Ok((v, m))
}

/// Parses `text` as a value (and optional `/mask`) of field `f`. Returns
/// (value, mask), both within the field's width, value already masked.
pub fn parse_field_value(f: Field, text: &str) -> Result<(u64, u64), FlowError> {
    let d = f.def();
    let max = f.ones();
    let name = d.name;
    let (vs, ms) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let (v, m) = match d.fmt {
        Fmt::Dec | Fmt::Hex => {
            let v = if f == Field::InPort {
                match vs {
                    "LOCAL" | "local" => Some(0xfffe),
                    _ => parse_uint(vs),
                }
            } else {
                parse_uint(vs)
            }
            .ok_or_else(|| bad(name, text, "a decimal or 0x-hex number"))?;
            let m = match ms {
                None => max,
                Some(_) if f == Field::ConjId => {
                    return Err(bad(name, text, "an exact value (conj_id is not maskable)"))
                }
                Some(ms) => parse_uint(ms).ok_or_else(|| bad(name, text, "a mask as a decimal or 0x-hex number"))?,
            };
            (v, m)
        }
        Fmt::Mac => {
            let v = parse_mac(vs).ok_or_else(|| bad(name, text, "a MAC address xx:xx:xx:xx:xx:xx"))?;
            let m = match ms {
                None => max,
                Some(ms) => parse_mac(ms).ok_or_else(|| bad(name, text, "a MAC mask xx:xx:xx:xx:xx:xx"))?,
            };
            (v, m)
        }
        Fmt::Ipv4 => {
            let v = parse_ipv4(vs).ok_or_else(|| bad(name, text, "an IPv4 address a.b.c.d[/len|/mask]"))?;
            let m = match ms {
                None => max,
                Some(ms) if !ms.contains('.') => {
                    let len: u32 = ms.parse().map_err(|_| bad(name, text, "a prefix length 0-32"))?;
                    if len > 32 {
                        return Err(bad(name, text, "a prefix length 0-32"));
                    }
                    prefix_mask(len, 32)
                }
                Some(ms) => parse_ipv4(ms).ok_or_else(|| bad(name, text, "an IPv4 mask a.b.c.d"))?,
            };
            (v, m)
        }
        Fmt::Ipv6Hi | Fmt::Ipv6Lo => {
            return Err(FlowError::Unsupported {
                what: format!("{name}={text}"),
                why: "a 128-bit field is read whole (parse_wide_value)".into(),
            })
        }
        Fmt::Frag => {
            if ms.is_some() {
                return Err(bad(name, text, "one of no, yes, first, later, not_later"));
            }
            match vs {
                "no" => (0, FRAG_ANY),
                "yes" => (FRAG_ANY, FRAG_ANY),
                "first" => (FRAG_ANY, FRAG_ANY | FRAG_LATER),
                "later" => (FRAG_ANY | FRAG_LATER, FRAG_ANY | FRAG_LATER),
                "not_later" => (0, FRAG_LATER),
                _ => return Err(bad(name, text, "one of no, yes, first, later, not_later")),
            }
        }
        Fmt::TcpFlags | Fmt::CtState => {
            let names = if d.fmt == Fmt::TcpFlags { TCP_FLAG_NAMES } else { CT_STATE_NAMES };
            if vs.starts_with('+') || vs.starts_with('-') {
                if ms.is_some() {
                    return Err(bad(name, text, "either +flag notation or value/mask, not both"));
                }
                parse_flags(f, vs, names)?
            } else {
                let v = parse_uint(vs).ok_or_else(|| bad(name, text, "a number or +flag-flag notation"))?;
                let m = match ms {
                    None => max,
                    Some(ms) => parse_uint(ms).ok_or_else(|| bad(name, text, "a mask number"))?,
                };
                (v, m)
            }
        }
    };
    if v > max || m > max {
        return Err(bad(name, text, &format!("a value that fits in {} bits", d.bits)));
    }
    Ok((v & m, m))
}

/// Formats value `v` under mask `m` of field `f` as ovs-ofctl prints it.
/// Parses the value of a 128-bit field (named by its high half):
/// `2001:db8::1`, `2001:db8::/32` or `2001:db8::/ffff:ffff::`.
pub fn parse_wide_value(f: Field, text: &str) -> Result<(u128, u128), FlowError> {
    let name = f.name();
    let (vs, ms) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    if f == Field::CtLabelHi {
        let expected = "a 128-bit value[/mask] (0x... or decimal)";
        let v = parse_u128(vs).ok_or_else(|| bad(name, text, expected))?;
        let m = match ms {
            None => u128::MAX,
            Some(ms) => parse_u128(ms).ok_or_else(|| bad(name, text, expected))?,
        };
        return Ok((v & m, m));
    }
    let expected = "an IPv6 address[/len|/mask]";
    let v = parse_ipv6(vs).ok_or_else(|| bad(name, text, expected))?;
    let m = match ms {
        None => u128::MAX,
        Some(ms) if !ms.contains(':') => {
            let len: u32 = ms.parse().map_err(|_| bad(name, text, "a prefix length 0-128"))?;
            if len > 128 {
                return Err(bad(name, text, "a prefix length 0-128"));
            }
            prefix_mask128(len)
        }
        Some(ms) => parse_ipv6(ms).ok_or_else(|| bad(name, text, "an IPv6 mask"))?,
    };
    Ok((v & m, m))
}

/// A 128-bit number in hex (`0x...`) or decimal.
fn parse_u128(s: &str) -> Option<u128> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) if !h.is_empty() && h.len() <= 32 => u128::from_str_radix(h, 16).ok(),
        Some(_) => None,
        None => s.parse().ok(),
    }
}

/// Formats a 128-bit field's value/mask as Open vSwitch does: `ct_label`
/// in hex (`/mask` unless exact); an address alone when exact, `/len` for
/// a prefix, `/mask` otherwise.
pub fn format_wide_value(f: Field, v: u128, m: u128) -> String {
    if f == Field::CtLabelHi {
        return if m == u128::MAX { format!("{v:#x}") } else { format!("{v:#x}/{m:#x}") };
    }
    match prefix_len128(m) {
        Some(128) => format_ipv6(v),
        Some(l) => format!("{}/{}", format_ipv6(v), l),
        None => format!("{}/{}", format_ipv6(v), format_ipv6(m)),
    }
}

pub fn format_field_value(f: Field, v: u64, m: u64) -> String {
    let d = f.def();
    let full = m == f.ones();
    match d.fmt {
        Fmt::Dec | Fmt::Hex | Fmt::TcpFlags | Fmt::Ipv6Hi | Fmt::Ipv6Lo if !full => format!("{v:#x}/{m:#x}"),
        Fmt::Ipv6Hi | Fmt::Ipv6Lo => format!("{v:#x}"),
        // As Open vSwitch prints it: 0 for the first pass, else in hex.
        Fmt::Dec if f == Field::RecircId && v != 0 => format!("{v:#x}"),
        Fmt::Dec => format!("{v}"),
        Fmt::Hex | Fmt::TcpFlags => format!("{v:#x}"),
        Fmt::Mac if full => format_mac(v),
        Fmt::Mac => format!("{}/{}", format_mac(v), format_mac(m)),
        Fmt::Ipv4 => match prefix_len(m, 32) {
            Some(32) => format_ipv4(v),
            Some(l) => format!("{}/{}", format_ipv4(v), l),
            None => format!("{}/{}", format_ipv4(v), format_ipv4(m)),
        },
        Fmt::Frag => match (v, m) {
            (0, FRAG_ANY) | (0, 3) => "no".into(),
            (FRAG_ANY, FRAG_ANY) => "yes".into(),
            (FRAG_ANY, 3) => "first".into(),
            (3, 3) => "later".into(),
            (0, FRAG_LATER) => "not_later".into(),
            _ => format!("{v:#x}/{m:#x}"),
        },
        // Exact: a packet's state, in the one form Open vSwitch takes for packets too.
        Fmt::CtState if full => format!("{v:#x}"),
        Fmt::CtState => {
            let mut s = String::new();
            for (n, b) in CT_STATE_NAMES {
                if m & b != 0 {
                    s.push(if v & b != 0 { '+' } else { '-' });
                    s.push_str(n);
                }
            }
            if m & !0xff != 0 || s.is_empty() {
                format!("{v:#x}/{m:#x}")
            } else {
                s
            }
        }
    }
}

/// Builds a [`Match`] from ovs-ofctl match syntax, one `name[=value]` at a time.
#[derive(Clone, Debug, Default)]
pub struct MatchBuilder {
    m: Match,
}

/// The protocol shorthands of ovs-ofctl: name -> (eth_type, ip_proto).
pub const SHORTHANDS: &[(&str, u64, Option<u64>)] = &[
    ("ip", ETH_TYPE_IP, None),
    ("ipv4", ETH_TYPE_IP, None),
    ("arp", ETH_TYPE_ARP, None),
    ("rarp", 0x8035, None),
    ("tcp", ETH_TYPE_IP, Some(IPPROTO_TCP)),
    ("udp", ETH_TYPE_IP, Some(IPPROTO_UDP)),
    ("sctp", ETH_TYPE_IP, Some(IPPROTO_SCTP)),
    ("icmp", ETH_TYPE_IP, Some(IPPROTO_ICMP)),
    ("ipv6", ETH_TYPE_IPV6, None),
    ("tcp6", ETH_TYPE_IPV6, Some(IPPROTO_TCP)),
    ("udp6", ETH_TYPE_IPV6, Some(IPPROTO_UDP)),
    ("sctp6", ETH_TYPE_IPV6, Some(IPPROTO_SCTP)),
    ("icmp6", ETH_TYPE_IPV6, Some(IPPROTO_ICMPV6)),
    ("mpls", ETH_TYPE_MPLS, None),
    ("mplsm", ETH_TYPE_MPLS_MCAST, None),
];

impl MatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&mut self, f: Field, v: u64, m: u64, text: &str) -> Result<(), FlowError> {
        let (cur_v, cur_m) = self.m.field(f);
        let common = cur_m & m;
        if (cur_v ^ v) & common != 0 {
            return Err(FlowError::Conflict { field: f.name().to_string(), value: text.to_string() });
        }
        self.m.set_masked(f, v, m);
        Ok(())
    }

    /// Applies one match element. Returns `Ok(false)` if `name` is not a match
    /// field or shorthand (the caller may know it as something else).
    pub fn apply(&mut self, name: &str, value: Option<&str>) -> Result<bool, FlowError> {
        let text = value.unwrap_or("");
        let need_value = |what: &str| -> Result<&str, FlowError> {
            value.ok_or_else(|| FlowError::MissingValue { field: what.to_string() })
        };
        if let Some((_, et, proto)) = SHORTHANDS.iter().find(|(n, _, _)| *n == name) {
            if value.is_some() {
                return Err(bad(name, text, "no value (a protocol shorthand)"));
            }
            self.set(Field::EthType, *et, 0xffff, name)?;
            if let Some(p) = proto {
                self.set(Field::IpProto, *p, 0xff, name)?;
            }
            return Ok(true);
        }
        match name {
            "eth" => return Ok(true),
            "dl_vlan" => {
                let s = need_value(name)?;
                let v = parse_uint(s).ok_or_else(|| bad(name, s, "a VLAN id 0-4095, or 0xffff for untagged"))?;
                if v == 0xffff {
                    self.set(Field::VlanTci, 0, 0xffff, s)?;
                } else if v <= 0xfff {
                    self.set(Field::VlanTci, VLAN_CFI | v, VLAN_CFI | 0xfff, s)?;
                } else {
                    return Err(bad(name, s, "a VLAN id 0-4095, or 0xffff for untagged"));
                }
                return Ok(true);
            }
            "dl_vlan_pcp" | "vlan_pcp" => {
                let s = need_value(name)?;
                let v = parse_uint(s).filter(|v| *v <= 7).ok_or_else(|| bad(name, s, "a priority 0-7"))?;
                self.set(Field::VlanTci, VLAN_CFI | (v << 13), 0xf000, s)?;
                return Ok(true);
            }
            "vlan_vid" => {
                let s = need_value(name)?;
                let (vs, ms) = s.split_once('/').map(|(a, b)| (a, Some(b))).unwrap_or((s, None));
                let v = parse_uint(vs)
                    .filter(|v| *v <= 0x1fff)
                    .ok_or_else(|| bad(name, s, "a 13-bit VID (0x1000 = present)"))?;
                let m = match ms {
                    None => 0x1fff,
                    Some(ms) => parse_uint(ms).filter(|v| *v <= 0x1fff).ok_or_else(|| bad(name, s, "a 13-bit mask"))?,
                };
                self.set(Field::VlanTci, v & m, m, s)?;
                return Ok(true);
            }
            "nw_tos" => {
                let s = need_value(name)?;
                let v = parse_uint(s)
                    .filter(|v| *v <= 0xff && v & 3 == 0)
                    .ok_or_else(|| bad(name, s, "a TOS byte 0-255 with the two ECN bits clear"))?;
                self.set(Field::IpDscp, v >> 2, 0x3f, s)?;
                return Ok(true);
            }
            _ => {}
        }
        let Some(f) = Field::from_name(name) else {
            return Ok(false);
        };
        let s = need_value(name)?;
        if let Some((hi, lo)) = f.wide() {
            let (v, m) = parse_wide_value(f, s)?;
            let (vh, mh, vl, ml) = ((v >> 64) as u64, (m >> 64) as u64, v as u64, m as u64);
            // Check both halves before setting either, so a conflict leaves no trace.
            for (h, hv, hm) in [(hi, vh, mh), (lo, vl, ml)] {
                let (cv, cm) = self.m.field(h);
                if (cv ^ hv) & cm & hm != 0 {
                    return Err(FlowError::Conflict { field: f.name().to_string(), value: s.to_string() });
                }
            }
            self.m.set_wide_masked(hi, v, m);
            return Ok(true);
        }
        let (v, m) = parse_field_value(f, s)?;
        self.set(f, v, m, s)?;
        Ok(true)
    }

    /// Finishes the match, checking prerequisites.
    pub fn finish(self) -> Result<Match, FlowError> {
        check_prereqs(&self.m)?;
        Ok(self.m)
    }

    /// Finishes without the prerequisite check (packet specs for trace).
    pub fn finish_unchecked(self) -> Match {
        self.m
    }
}

fn exact_is(m: &Match, f: Field, v: u64) -> bool {
    let (fv, fm) = m.field(f);
    fm == f.ones() && fv == v
}

fn prereq_ok(m: &Match, p: Prereq) -> bool {
    let ip4 = exact_is(m, Field::EthType, ETH_TYPE_IP);
    let ip6 = exact_is(m, Field::EthType, ETH_TYPE_IPV6);
    let ip = ip4 || ip6;
    let icmp6 = ip6 && exact_is(m, Field::IpProto, IPPROTO_ICMPV6);
    // ND: the type exact, the code's value 0 (a wildcarded code is 0, as OVS checks it).
    let nd = |types: &[u64]| {
        icmp6 && types.iter().any(|&t| exact_is(m, Field::Icmpv6Type, t)) && m.field(Field::Icmpv6Code).0 == 0
    };
    match p {
        Prereq::None => true,
        Prereq::Ipv4 => ip4,
        Prereq::Ipv6 => ip6,
        Prereq::Ip => ip,
        Prereq::Arp => exact_is(m, Field::EthType, ETH_TYPE_ARP),
        Prereq::L4 => ip && [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP].iter().any(|&p| exact_is(m, Field::IpProto, p)),
        Prereq::Tcp => ip && exact_is(m, Field::IpProto, IPPROTO_TCP),
        Prereq::Icmp => ip4 && exact_is(m, Field::IpProto, IPPROTO_ICMP),
        Prereq::Icmpv6 => icmp6,
        Prereq::Nd => nd(&[ND_SOLICIT, ND_ADVERT]),
        Prereq::NdSolicit => nd(&[ND_SOLICIT]),
        Prereq::NdAdvert => nd(&[ND_ADVERT]),
        Prereq::Mpls => exact_is(m, Field::EthType, ETH_TYPE_MPLS) || exact_is(m, Field::EthType, ETH_TYPE_MPLS_MCAST),
        Prereq::Ct => {
            let (v, mk) = m.field(Field::CtState);
            v & mk & (CS_NEW | CS_EST | CS_REL | CS_RPL | CS_SNAT | CS_DNAT) != 0
                || (v & mk & CS_TRK != 0 && mk & CS_INV != 0 && v & CS_INV == 0)
        }
    }
}

fn prereq_text(p: Prereq) -> &'static str {
    match p {
        Prereq::None => "nothing",
        Prereq::Ipv4 => "ip (dl_type=0x0800)",
        Prereq::Ipv6 => "ipv6 (dl_type=0x86dd)",
        Prereq::Ip => "ip or ipv6",
        Prereq::Arp => "arp (dl_type=0x0806)",
        Prereq::L4 => "tcp, udp or sctp (or tcp6, udp6, sctp6)",
        Prereq::Tcp => "tcp or tcp6",
        Prereq::Icmp => "icmp",
        Prereq::Icmpv6 => "icmp6",
        Prereq::Nd => "icmp6 with icmp_type=135 or 136 and icmp_code=0",
        Prereq::NdSolicit => "icmp6 with icmp_type=135 and icmp_code=0",
        Prereq::NdAdvert => "icmp6 with icmp_type=136 and icmp_code=0",
        Prereq::Mpls => "mpls or mplsm (dl_type=0x8847 or 0x8848)",
        Prereq::Ct => "ct_state of a valid connection (one of +new, +est, +rel, +rpl, +snat, +dnat, or +trk-inv)",
    }
}

/// Checks that every field the match constrains has its prerequisites
/// guaranteed by the match itself (as ovs-ofctl requires for OpenFlow 1.2+).
/// Fields that share storage (`nw_src`/`arp_spa`, `tp_src`/`icmp_type`) are
/// one constraint: it is enough that one of the names sharing it is satisfied.
pub fn check_prereqs(m: &Match) -> Result<(), FlowError> {
    for d in FIELDS.iter().filter(|d| d.storage.is_none()) {
        let used = match d.id.wide() {
            Some((hi, lo)) => m.mask().get(hi) | m.mask().get(lo) != 0,
            None if d.id.is_wide_low() => false,
            None => m.mask().get(d.id) != 0,
        };
        if !used {
            continue;
        }
        let shared = FIELDS.iter().filter(|a| a.id == d.id || a.storage == Some(d.id));
        if !shared.clone().any(|a| prereq_ok(m, a.prereq)) {
            let needs: Vec<String> = shared.map(|a| format!("{} needs {}", a.name, prereq_text(a.prereq))).collect();
            return Err(FlowError::Prerequisite { field: d.name.to_string(), needs: needs.join("; ") });
        }
    }
    Ok(())
}

/// Checks that match `m` guarantees the prerequisites of field `f` (one of
/// the names sharing its storage is enough, as in [`check_prereqs`]).
pub fn check_field_prereq(m: &Match, f: Field) -> Result<(), FlowError> {
    let f = match f.half_of() {
        Some((hi, _)) => hi,
        None => f,
    };
    let shared = FIELDS.iter().filter(|a| a.id == f || a.storage == Some(f));
    if shared.clone().any(|a| prereq_ok(m, a.prereq)) {
        return Ok(());
    }
    let needs: Vec<String> = shared.map(|a| format!("{} needs {}", a.name, prereq_text(a.prereq))).collect();
    Err(FlowError::Prerequisite { field: f.name().to_string(), needs: needs.join("; ") })
}

/// Splits ovs-ofctl text at top-level separators (commas and whitespace),
/// keeping parentheses and brackets together: `a=1, b(c,d),e` -> `a=1`, `b(c,d)`, `e`.
pub fn split_top(s: &str) -> Result<Vec<&str>, FlowError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = None;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => {
                depth += 1;
                start.get_or_insert(i);
            }
            ')' | ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err(FlowError::Syntax { text: s.to_string(), expected: "balanced parentheses".into() });
                }
            }
            ',' | ' ' | '\t' if depth == 0 => {
                if let Some(st) = start.take() {
                    out.push(&s[st..i]);
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if depth != 0 {
        return Err(FlowError::Syntax { text: s.to_string(), expected: "balanced parentheses".into() });
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    Ok(out)
}

/// Parses a whole match (`in_port=1,tcp,nw_dst=10.0.0.0/8`), checking prerequisites.
pub fn parse_match(s: &str) -> Result<Match, FlowError> {
    let mut b = MatchBuilder::new();
    for tok in split_top(s)? {
        let (n, v) = match tok.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (tok, None),
        };
        if !b.apply(n, v)? {
            return Err(FlowError::UnknownField { name: n.to_string() });
        }
    }
    b.finish()
}

/// Parses a packet description for tracing (`in_port=1,tcp,nw_dst=10.0.0.1,tp_dst=80`):
/// unspecified fields are zero; masks are not allowed.
pub fn parse_key(s: &str) -> Result<FlowKey, FlowError> {
    let mut b = MatchBuilder::new();
    for tok in split_top(s)? {
        let (n, v) = match tok.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (tok, None),
        };
        if n != "dl_vlan" && v.is_some_and(|v| v.contains('/')) {
            return Err(FlowError::Syntax {
                text: tok.to_string(),
                expected: "an exact value (a packet has no masks)".into(),
            });
        }
        if !b.apply(n, v)? {
            return Err(FlowError::UnknownField { name: n.to_string() });
        }
    }
    Ok(*b.finish_unchecked().key())
}

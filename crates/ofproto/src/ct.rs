//! The connection tracking actions, `ct(...)` and `ct_clear`, and their
//! ovs-ofctl notation (ovs-actions(7), "Connection Tracking Actions").
//!
//! Invariant: a [`Ct`] that parses is one Open vSwitch accepts: `force` and
//! `exec` only with `commit`, nested actions only writing `ct_mark` or
//! `ct_label`, a zone field exactly 16 bits wide, a resume table below 255,
//! NAT ranges with min <= max and ports from 1. Printing gives text that
//! parses back to the same action.

use kairo_flow::field::Field;
use kairo_flow::parse::parse_uint;
use kairo_flow::split_top;
pub use kairo_odp::nat::{Nat, NatAddrs, NatKind};

use crate::action::{Action, SubField};
use crate::OfError;

/// Where a `ct` action's zone comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtZone {
    Imm(u16),
    /// 16 bits of a field, read when the action runs (`zone=NXM_NX_REG0[0..15]`).
    Field(SubField),
}

/// `ct(...)`: send the packet through the connection tracker.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ct {
    pub commit: bool,
    pub force: bool,
    pub zone: CtZone,
    /// Resume the pipeline at this table with the connection's state
    /// (a recirculation); `None`: the action only tracks (and commits).
    pub table: Option<u8>,
    pub nat: Option<Nat>,
    /// Nested actions: `set_field`/`load`/`move` into ct_mark or ct_label.
    pub exec: Vec<Action>,
}

impl Default for Ct {
    fn default() -> Ct {
        Ct { commit: false, force: false, zone: CtZone::Imm(0), table: None, nat: None, exec: Vec::new() }
    }
}

fn syntax(text: &str, expected: &str) -> OfError {
    OfError::Syntax { text: text.to_string(), expected: expected.to_string() }
}

/// Is `f` a field only `ct(exec(...))` may write?
pub fn is_ct_field(f: Field) -> bool {
    matches!(f, Field::CtMark | Field::CtLabelHi | Field::CtLabelLo)
}

/// The field an action writes (set_field, load, move), for the checks of
/// what may write ct_mark and ct_label.
pub fn written(a: &Action) -> Option<Field> {
    match a {
        Action::SetField { field, .. } | Action::SetWide { field, .. } => Some(*field),
        Action::Move { dst, .. } | Action::StackPop(dst) => Some(dst.field),
        _ => None,
    }
}

/// Rejects an action outside `ct` that writes ct_mark or ct_label, as
/// ovs-ofctl does.
pub(crate) fn check_outside(a: &Action, text: &str) -> Result<(), OfError> {
    if let Action::Clone(body) = a {
        return body.iter().try_for_each(|b| check_outside(b, text));
    }
    match written(a) {
        Some(f) if is_ct_field(f) => Err(syntax(text, "no write to ct_mark or ct_label outside ct(exec(...))")),
        _ => Ok(()),
    }
}

/// `ct` needs an IP packet, and a NAT address of the packet's family
/// (ovs-ofctl: "actions are invalid with specified match"): the match must
/// say ip or ipv6, and no `push_mpls` before the `ct` in the list; and
/// `commit` cannot apply to packets the match says are invalid (+inv).
pub fn check_match(m: &kairo_flow::Match, list: &[Action]) -> Result<(), OfError> {
    let (ty, mask) = m.field(Field::EthType);
    let ty = if mask == 0xffff { ty } else { 0 };
    let mut mpls = false;
    for a in list {
        match a {
            Action::PushMpls { .. } => mpls = true,
            Action::Ct(ct) => {
                let ip4 = ty == kairo_flow::field::ETH_TYPE_IP && !mpls;
                let ip6 = ty == kairo_flow::field::ETH_TYPE_IPV6 && !mpls;
                let family_ok = match ct.nat.and_then(|n| n.addrs) {
                    Some(NatAddrs::V4(..)) => ip4,
                    Some(NatAddrs::V6(..)) => ip6,
                    None => ip4 || ip6,
                };
                // A packet the match says is invalid cannot be committed.
                let (st, st_mask) = m.field(Field::CtState);
                let invalid = st & st_mask & kairo_flow::parse::CS_INV != 0;
                if !family_ok || (ct.commit && invalid) {
                    return Err(syntax(
                        &a.to_string(),
                        "a match on ip or ipv6 (a NAT address of that family; no commit of +inv packets) for ct: actions are invalid with the specified match",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

impl Ct {
    /// Parses the text inside `ct(...)`.
    pub fn parse(args: &str) -> Result<Ct, OfError> {
        let whole = format!("ct({args})");
        let mut ct = Ct::default();
        for tok in split_top(args)? {
            let (key, val) = match tok.split_once('=') {
                Some((k, v)) if !k.contains('(') => (k, Some(v)),
                _ => (tok, None),
            };
            match (key, val) {
                ("commit", None) => ct.commit = true,
                ("force", None) => ct.force = true,
                ("table", Some(v)) => {
                    let t = parse_uint(v).filter(|t| *t < 255).ok_or_else(|| syntax(tok, "table=N with N in 0-254"))?;
                    ct.table = Some(t as u8);
                }
                ("zone", Some(v)) => {
                    ct.zone = match parse_uint(v) {
                        Some(z) if z <= 0xffff => CtZone::Imm(z as u16),
                        Some(_) => return Err(syntax(tok, "a zone 0-65535")),
                        None => {
                            let sf = SubField::parse(v)?;
                            if sf.n_bits != 16 {
                                return Err(syntax(tok, "a zone field of exactly 16 bits (e.g. NXM_NX_REG0[0..15])"));
                            }
                            CtZone::Field(sf)
                        }
                    }
                }
                ("alg", Some(_)) => {
                    return Err(OfError::Unsupported {
                        what: tok.to_string(),
                        why: "kairo's connection tracker has no application-level gateways (ftp, tftp)".into(),
                    })
                }
                _ if tok == "nat" || tok.starts_with("nat(") => {
                    if ct.nat.is_some() {
                        return Err(syntax(&whole, "at most one nat"));
                    }
                    let inner = match tok.strip_prefix("nat(") {
                        Some(r) => {
                            r.strip_suffix(')').ok_or_else(|| syntax(tok, "nat(...) with a closing parenthesis"))?
                        }
                        None => "",
                    };
                    ct.nat = Some(
                        Nat::parse(inner, tok).map_err(|e| OfError::Syntax { text: e.text, expected: e.expected })?,
                    );
                }
                _ if tok.starts_with("exec(") && tok.ends_with(')') => {
                    for a in split_top(&tok[5..tok.len() - 1])? {
                        let act = Action::parse_nested(a)?;
                        match written(&act) {
                            Some(f) if is_ct_field(f) => ct.exec.push(act),
                            Some(f) => {
                                return Err(syntax(a, &format!("a write to ct_mark or ct_label ({} is not)", f.name())))
                            }
                            None => return Err(syntax(a, "set_field, load or move into ct_mark or ct_label")),
                        }
                    }
                }
                _ => {
                    return Err(syntax(
                        tok,
                        "one of commit, force, table=N, zone=N|FIELD[], nat[(...)], exec(...) inside ct(...)",
                    ))
                }
            }
        }
        if ct.force && !ct.commit {
            return Err(syntax(&whole, "`commit` with `force` (\"force\" flag requires \"commit\" flag)"));
        }
        if !ct.exec.is_empty() && !ct.commit {
            return Err(syntax(&whole, "`commit` with `exec(...)` (nested actions apply to committed connections)"));
        }
        Ok(ct)
    }
}

impl std::fmt::Display for Ct {
    /// In ovs-ofctl's order: commit, force, table, zone, nat, exec.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.commit {
            parts.push("commit".into());
        }
        if self.force {
            parts.push("force".into());
        }
        if let Some(t) = self.table {
            parts.push(format!("table={t}"));
        }
        match self.zone {
            CtZone::Imm(0) => {}
            CtZone::Imm(z) => parts.push(format!("zone={z}")),
            CtZone::Field(sf) => parts.push(format!("zone={sf}")),
        }
        if let Some(n) = &self.nat {
            parts.push(n.to_string());
        }
        if !self.exec.is_empty() {
            let inner: Vec<String> = self.exec.iter().map(|a| a.to_string()).collect();
            parts.push(format!("exec({})", inner.join(",")));
        }
        write!(f, "ct({})", parts.join(","))
    }
}

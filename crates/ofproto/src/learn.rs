//! The `learn(...)` action and its ovs-ofctl notation (ovs-actions(7),
//! "The learn action"): a flow that, when it runs, adds or refreshes
//! another flow built from the packet.
//!
//! Owns the action's parts (where the new flow goes, its timeouts and
//! flags, its specs) and what a spec is: a match on a field (from a value
//! or from the packet), a load into the new flow's actions, or an output
//! to a port read from the packet. Executing it is translation's
//! (`kairo_xlate`); installing what it makes is maintenance's.
//!
//! Invariant: a [`Learn`] that parses is one Open vSwitch accepts: source
//! and destination of equal width, immediates that fit, load destinations
//! writable, a match destination's prerequisites met by the immediate
//! matches before it (as `learn_check` reads them, in order), table below
//! 255, result_dst one writable bit. Printing gives text that parses back
//! to the same action.

use kairo_flow::field::Field;
use kairo_flow::parse::{format_field_value, parse_field_value, parse_uint};
use kairo_flow::{split_top, Match};

use crate::action::SubField;
use crate::OfError;

/// Learn flags (NX_LEARN_F_*), as on the wire.
pub mod flags {
    pub const SEND_FLOW_REM: u16 = 1 << 0;
    pub const DELETE_LEARNED: u16 = 1 << 1;
    pub const WRITE_RESULT: u16 = 1 << 2;
}

/// Where a spec's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnSrc {
    /// Bits of the packet's flow when the action runs.
    Field(SubField),
    /// A constant, as the destination's bits (not shifted to their offset).
    Value(u64),
}

/// One part of the flow `learn` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnSpec {
    /// The new flow matches `dst`'s bits exactly, to the value of `src`.
    Match { dst: SubField, src: LearnSrc },
    /// The new flow's actions load `src`'s value into `dst`.
    Load { dst: SubField, src: LearnSrc },
    /// The new flow's actions output to the port `src` holds (nothing if
    /// that is not a port an output can name).
    Output { src: SubField },
}

/// `learn(...)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Learn {
    /// The table the new flow goes in (default 1).
    pub table: u8,
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    /// The new flow's `fin_timeout` (idle, hard), if either is nonzero:
    /// its first action.
    pub fin_idle_timeout: u16,
    pub fin_hard_timeout: u16,
    pub cookie: u64,
    /// [`flags`]: send_flow_rem, delete_learned, and WRITE_RESULT (set
    /// exactly when `result_dst` is).
    pub flags: u16,
    /// At most this many flows with the learn's cookie in its table (0: no
    /// limit): a new flow past it is not added.
    pub limit: u32,
    /// One bit written 1 if the flow was learned (or was there), 0 if the
    /// limit refused it.
    pub result_dst: Option<SubField>,
    pub specs: Vec<LearnSpec>,
}

impl Default for Learn {
    fn default() -> Learn {
        Learn {
            table: 1,
            priority: crate::syntax::DEFAULT_PRIORITY,
            idle_timeout: 0,
            hard_timeout: 0,
            fin_idle_timeout: 0,
            fin_hard_timeout: 0,
            cookie: 0,
            flags: 0,
            limit: 0,
            result_dst: None,
            specs: Vec::new(),
        }
    }
}

fn syntax(text: &str, expected: &str) -> OfError {
    OfError::Syntax { text: text.to_string(), expected: expected.to_string() }
}

fn num<T: TryFrom<u64>>(text: &str, v: &str, what: &str) -> Result<T, OfError> {
    parse_uint(v).and_then(|n| T::try_from(n).ok()).ok_or_else(|| syntax(text, what))
}

/// A subfield whose value fills `n_bits` bits.
fn fits(v: u64, n_bits: u32) -> bool {
    n_bits >= 64 || v >> n_bits == 0
}

impl Learn {
    /// Parses the text inside `learn(...)`.
    pub fn parse(arg: &str) -> Result<Learn, OfError> {
        let mut l = Learn::default();
        for tok in split_top(arg)? {
            let (name, value) = match tok.find(['=', ':']) {
                Some(i) => (&tok[..i], Some(&tok[i + 1..])),
                None => (tok, None),
            };
            let need = || value.ok_or_else(|| syntax(tok, &format!("{name}=VALUE")));
            match name {
                "table" => {
                    l.table = num(tok, need()?, "table=N with N in 0-254")?;
                    if l.table == 255 {
                        return Err(syntax(tok, "a table 0-254 (255 is not valid for learn)"));
                    }
                }
                "priority" => l.priority = num(tok, need()?, "priority=0-65535")?,
                "idle_timeout" => l.idle_timeout = num(tok, need()?, "idle_timeout=0-65535")?,
                "hard_timeout" => l.hard_timeout = num(tok, need()?, "hard_timeout=0-65535")?,
                "fin_idle_timeout" => l.fin_idle_timeout = num(tok, need()?, "fin_idle_timeout=0-65535")?,
                "fin_hard_timeout" => l.fin_hard_timeout = num(tok, need()?, "fin_hard_timeout=0-65535")?,
                "cookie" => l.cookie = num(tok, need()?, "cookie=a 64-bit number")?,
                "send_flow_rem" if value.is_none() => l.flags |= flags::SEND_FLOW_REM,
                "delete_learned" if value.is_none() => l.flags |= flags::DELETE_LEARNED,
                "limit" => l.limit = num(tok, need()?, "limit=a 32-bit number")?,
                "result_dst" => {
                    let sf = SubField::parse(need()?)?;
                    writable(sf.field, tok)?;
                    if sf.n_bits != 1 {
                        return Err(syntax(tok, "result_dst of a single bit"));
                    }
                    l.flags |= flags::WRITE_RESULT;
                    l.result_dst = Some(sf);
                }
                "load" => l.specs.push(parse_load(tok, need()?)?),
                "output" => l.specs.push(LearnSpec::Output { src: SubField::parse(need()?)? }),
                _ => l.specs.push(parse_match(tok, name, value)?),
            }
        }
        l.check()?;
        Ok(l)
    }

    /// Open vSwitch's `learn_check`: each destination's prerequisites met by
    /// the immediate matches before it (and its own), in order.
    pub fn check(&self) -> Result<(), OfError> {
        let mut m = Match::default();
        for s in &self.specs {
            let dst = match s {
                LearnSpec::Match { dst, src } => {
                    if let LearnSrc::Value(v) = src {
                        m.set_masked(dst.field, v << dst.ofs, dst.mask());
                    }
                    dst
                }
                LearnSpec::Load { dst, .. } => dst,
                LearnSpec::Output { .. } => continue,
            };
            kairo_flow::parse::check_field_prereq(&m, dst.field).map_err(|e| OfError::Syntax {
                text: self.to_string(),
                expected: format!("the learned flow's prerequisites matched before {dst} ({e})"),
            })?;
        }
        Ok(())
    }
}

fn writable(f: Field, text: &str) -> Result<(), OfError> {
    if f.def().writable {
        Ok(())
    } else {
        Err(syntax(text, &format!("a writable field ({} is read-only)", f.name())))
    }
}

/// `load:VALUE->DST[..]` or `load:SRC[..]->DST[..]`.
fn parse_load(tok: &str, v: &str) -> Result<LearnSpec, OfError> {
    let (src, dst) = v.split_once("->").ok_or_else(|| syntax(tok, "load:SRC->DST[a..b]"))?;
    let dst = SubField::parse(dst)?;
    writable(dst.field, tok)?;
    if let Some(n) = parse_uint(src) {
        if !fits(n, dst.n_bits) {
            return Err(syntax(tok, &format!("a value that fits in {} bits", dst.n_bits)));
        }
        return Ok(LearnSpec::Load { dst, src: LearnSrc::Value(n) });
    }
    let src = SubField::parse(src)?;
    if src.n_bits != dst.n_bits {
        return Err(syntax(
            tok,
            &format!("source and destination of equal width ({} vs {} bits)", src.n_bits, dst.n_bits),
        ));
    }
    Ok(LearnSpec::Load { dst, src: LearnSrc::Field(src) })
}

/// `DST[..]`, `DST[..]=SRC[..]` or `DST[..]=VALUE`.
fn parse_match(tok: &str, name: &str, value: Option<&str>) -> Result<LearnSpec, OfError> {
    let dst = SubField::parse(name).map_err(|e| match e {
        OfError::Flow(kairo_flow::FlowError::UnknownField { .. }) => syntax(
            tok,
            "table=, priority=, idle_timeout=, hard_timeout=, cookie=, send_flow_rem, delete_learned, limit=, \
             result_dst=, load:, output:, or a field to match (FIELD[a..b][=SRC|=VALUE])",
        ),
        e => e,
    })?;
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(LearnSpec::Match { dst, src: LearnSrc::Field(dst) });
    };
    if let Ok(src) = SubField::parse(v) {
        if src.n_bits != dst.n_bits {
            return Err(syntax(
                tok,
                &format!("source and destination of equal width ({} vs {} bits)", src.n_bits, dst.n_bits),
            ));
        }
        return Ok(LearnSpec::Match { dst, src: LearnSrc::Field(src) });
    }
    let whole = dst.ofs == 0 && dst.n_bits == dst.field.bits();
    let n = if whole {
        let (n, m) = parse_field_value(dst.field, v)?;
        if m != dst.field.ones() {
            return Err(syntax(tok, "an exact value (a learned match takes no mask)"));
        }
        n
    } else {
        parse_uint(v).ok_or_else(|| syntax(tok, "a field bit range or a decimal or 0x-hex value"))?
    };
    if !fits(n, dst.n_bits) {
        return Err(syntax(tok, &format!("a value that fits in {} bits", dst.n_bits)));
    }
    Ok(LearnSpec::Match { dst, src: LearnSrc::Value(n) })
}

impl std::fmt::Display for Learn {
    /// As ovs-ofctl prints it (`learn_format`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "learn(table={}", self.table)?;
        if self.idle_timeout != 0 {
            write!(f, ",idle_timeout={}", self.idle_timeout)?;
        }
        if self.hard_timeout != 0 {
            write!(f, ",hard_timeout={}", self.hard_timeout)?;
        }
        if self.fin_idle_timeout != 0 {
            write!(f, ",fin_idle_timeout={}", self.fin_idle_timeout)?;
        }
        if self.fin_hard_timeout != 0 {
            write!(f, ",fin_hard_timeout={}", self.fin_hard_timeout)?;
        }
        if self.priority != crate::syntax::DEFAULT_PRIORITY {
            write!(f, ",priority={}", self.priority)?;
        }
        if self.flags & flags::SEND_FLOW_REM != 0 {
            f.write_str(",send_flow_rem")?;
        }
        if self.flags & flags::DELETE_LEARNED != 0 {
            f.write_str(",delete_learned")?;
        }
        if self.cookie != 0 {
            write!(f, ",cookie={:#x}", self.cookie)?;
        }
        if self.limit != 0 {
            write!(f, ",limit={}", self.limit)?;
        }
        if let Some(r) = self.result_dst {
            write!(f, ",result_dst={r}")?;
        }
        for s in &self.specs {
            match s {
                LearnSpec::Match { dst, src: LearnSrc::Value(v) } => {
                    if dst.ofs == 0 && dst.n_bits == dst.field.bits() {
                        let (field, ones) = (dst.field, dst.field.ones());
                        write!(f, ",{}={}", field.name(), format_field_value(field, *v, ones))?;
                    } else {
                        write!(f, ",{dst}={v:#x}")?;
                    }
                }
                LearnSpec::Match { dst, src: LearnSrc::Field(src) } => {
                    write!(f, ",{dst}")?;
                    if src != dst {
                        write!(f, "={src}")?;
                    }
                }
                LearnSpec::Load { dst, src: LearnSrc::Value(v) } => write!(f, ",load:{v:#x}->{dst}")?,
                LearnSpec::Load { dst, src: LearnSrc::Field(src) } => write!(f, ",load:{src}->{dst}")?,
                LearnSpec::Output { src } => write!(f, ",output:{src}")?,
            }
        }
        f.write_str(")")
    }
}

//! Flow and group lines in ovs-ofctl syntax, and whole flow/group files.
//!
//! Accepts what `ovs-ofctl add-flows` / `add-groups` accept (for the fields and
//! actions kairo has) and what `dump-flows` / `dump-groups` print (`duration=`,
//! `n_packets=` and the like are read and ignored), so a real dump can be pasted.
//! Invariant: a file is accepted whole or rejected whole; the error names the
//! line number, quotes the line and says what was expected.

use kairo_flow::parse::{parse_uint, MatchBuilder};
use kairo_flow::{split_top, Field, Match};

use crate::action::{parse_action_list_in, Instructions};
use crate::group::{Bucket, Group, GroupType, Selection};
use crate::ports::PortNames;
use crate::{OfError, Rule};

/// Default priority of a flow that names none (as OpenFlow).
pub const DEFAULT_PRIORITY: u16 = 32768;

/// What a table does with a packet no rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MissBehavior {
    /// Stop the pipeline (the action set still executes, as in Open vSwitch).
    #[default]
    Drop,
    /// Continue to the given table (OpenFlow's OFPTC_TABLE_MISS_CONTINUE).
    Continue(u8),
}

/// A parsed flow line before it becomes a rule or a flow-mod. Fields the line
/// did not give are `None` (the default: every rule of every table).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowSpec {
    pub table: Option<u8>,
    pub priority: Option<u16>,
    pub cookie: u64,
    /// `cookie=V/M` (for mod/del): match cookies under the mask.
    pub cookie_mask: Option<u64>,
    pub m: Match,
    pub instructions: Option<Instructions>,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub out_port: Option<u32>,
    /// `out_group=G` (for del-flows): only rules that use group G.
    pub out_group: Option<u32>,
    /// OpenFlow flow-mod flags (`send_flow_rem`, `reset_counts`, ...; see [`crate::flags`]).
    pub flags: u16,
}

impl FlowSpec {
    /// The spec that selects exactly one rule (table, priority and match), as
    /// a strict delete or modify does.
    pub fn exact(table: u8, priority: u16, m: Match) -> FlowSpec {
        FlowSpec { table: Some(table), priority: Some(priority), m, ..FlowSpec::default() }
    }

    /// The rule this spec adds (table 0 and priority 32768 by default).
    pub fn into_rule(self) -> Result<Rule, OfError> {
        let mut inst = self.instructions.ok_or_else(|| OfError::Syntax {
            text: String::new(),
            expected: "`actions=...` (a flow to add needs actions)".into(),
        })?;
        let has_vlan = crate::action::match_has_vlan(&self.m);
        crate::action::normalize_vlan(&mut inst.apply, has_vlan);
        crate::action::normalize_vlan(&mut inst.write, has_vlan);
        for list in [&inst.apply, &inst.write] {
            crate::ct::check_match(&self.m, list)?;
        }
        Ok(Rule {
            table: self.table.unwrap_or(0),
            priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
            cookie: self.cookie,
            m: self.m,
            inst,
            idle_timeout: self.idle_timeout,
            hard_timeout: self.hard_timeout,
            flags: self.flags & crate::flags::KEPT,
        })
    }
}

/// Is `i` at the start of a token (start of text, or after a comma or space)?
fn at_boundary(s: &str, i: usize) -> bool {
    i == 0 || matches!(s.as_bytes()[i - 1], b',' | b' ' | b'\t')
}

/// Finds `pat` at a top-level token boundary (not inside parentheses).
fn find_token(s: &str, pat: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            _ if depth == 0 && at_boundary(s, i) && s[i..].starts_with(pat) => return Some(i),
            _ => {}
        }
    }
    None
}

fn num<T: TryFrom<u64>>(name: &str, v: &str, max_desc: &str) -> Result<T, OfError> {
    parse_uint(v)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| OfError::Syntax { text: format!("{name}={v}"), expected: max_desc.to_string() })
}

/// A table number (0-254: 255 is OpenFlow's "all tables", not a table).
fn table_num(name: &str, v: &str) -> Result<u8, OfError> {
    num::<u8>(name, v, "a table number 0-254").and_then(|t| {
        (t != 255).then_some(t).ok_or_else(|| OfError::Syntax {
            text: format!("{name}={v}"),
            expected: "a table number 0-254 (255 means all tables, not a table)".into(),
        })
    })
}

/// Parses one flow line (`table=0,priority=10,ip,nw_dst=10.0.0.0/8,actions=output:2`).
/// `need_actions`: adding a flow needs `actions=`; deleting one must not have them.
pub fn parse_flow(line: &str, need_actions: Option<bool>) -> Result<FlowSpec, OfError> {
    parse_flow_in(line, need_actions, &PortNames::NONE)
}

/// [`parse_flow`] with ports that may be given by name (`in_port=pod1`,
/// `output:"antrea-gw0"`), as ovs-ofctl takes them against a bridge.
pub fn parse_flow_in(line: &str, need_actions: Option<bool>, names: &PortNames) -> Result<FlowSpec, OfError> {
    let line = line.trim();
    let (head, actions) = match find_token(line, "actions=") {
        Some(i) => (&line[..i], Some(&line[i + "actions=".len()..])),
        None => (line, None),
    };
    match (need_actions, actions) {
        (Some(true), None) => {
            return Err(OfError::Syntax {
                text: line.to_string(),
                expected: "`actions=...` at the end of the flow".into(),
            })
        }
        (Some(false), Some(_)) => {
            return Err(OfError::Syntax {
                text: line.to_string(),
                expected: "no actions (this command takes only a match)".into(),
            })
        }
        _ => {}
    }
    let mut spec = FlowSpec::default();
    let mut mb = MatchBuilder::new();
    for tok in split_top(head)? {
        let (name, value) = match tok.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (tok, None),
        };
        let v = value.unwrap_or("");
        match name {
            "table" => spec.table = Some(table_num(name, v)?),
            "priority" => spec.priority = Some(num(name, v, "a priority 0-65535")?),
            "cookie" => {
                let (cv, cm) = match v.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (v, None),
                };
                // Errors quote the whole `cookie=value/mask`; a mask of -1 is
                // every bit (as ovs-ofctl documents).
                let whole = |what: &str| OfError::Syntax { text: format!("{name}={v}"), expected: what.into() };
                spec.cookie = parse_uint(cv).ok_or_else(|| whole("a 64-bit cookie"))?;
                spec.cookie_mask = cm
                    .map(|m| match m {
                        "-1" => Ok(u64::MAX),
                        _ => parse_uint(m).ok_or_else(|| whole("a 64-bit cookie mask (-1: every bit)")),
                    })
                    .transpose()?;
            }
            "idle_timeout" => spec.idle_timeout = num(name, v, "a timeout 0-65535 s")?,
            "hard_timeout" => spec.hard_timeout = num(name, v, "a timeout 0-65535 s")?,
            "out_port" => {
                spec.out_port = Some(match names.resolve(v)? {
                    Some(p) => p,
                    None => num(name, v, "a port number")?,
                })
            }
            "in_port" if names.resolve(v)?.is_some() => {
                let p = names.resolve(v)?.map(|p| p.to_string());
                mb.apply(name, p.as_deref())?;
            }
            "out_group" => spec.out_group = Some(num(name, v, "a group number")?),
            "send_flow_rem" => spec.flags |= crate::flags::SEND_FLOW_REM,
            "check_overlap" => spec.flags |= crate::flags::CHECK_OVERLAP,
            "reset_counts" => spec.flags |= crate::flags::RESET_COUNTS,
            "no_packet_counts" => spec.flags |= crate::flags::NO_PKT_COUNTS,
            "no_byte_counts" => spec.flags |= crate::flags::NO_BYT_COUNTS,
            // Printed by dump-flows or accepted by add-flow; no effect on forwarding here.
            "duration"
            | "n_packets"
            | "n_bytes"
            | "idle_age"
            | "hard_age"
            | "importance"
            | "no_readonly_table"
            | "allow_hidden_fields" => {}
            _ => {
                if !mb.apply(name, value)? {
                    return Err(OfError::Flow(kairo_flow::FlowError::UnknownField { name: name.to_string() }));
                }
            }
        }
    }
    spec.m = mb.finish()?;
    if let Some(a) = actions {
        spec.instructions = Some(Instructions::parse_in(a, names)?);
    }
    Ok(spec)
}

/// Parses one group line (`group_id=1,type=select,bucket=output:1,bucket=output:2`).
pub fn parse_group(line: &str) -> Result<Group, OfError> {
    parse_group_in(line, &PortNames::NONE)
}

/// [`parse_group`] with ports that may be given by name (in buckets'
/// actions and `watch_port`).
pub fn parse_group_in(line: &str, names: &PortNames) -> Result<Group, OfError> {
    let line = line.trim();
    let (head, buckets_text) = match find_token(line, "bucket=") {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let mut id = None;
    let mut ty = None;
    let mut fields: Option<Vec<Field>> = None;
    let mut method = None;
    let mut param = 0u64;
    for tok in split_top(head)? {
        let (name, v) = match tok.split_once('=') {
            Some((n, v)) => (n, v),
            None => (tok, ""),
        };
        match name {
            "group_id" => id = Some(num::<u32>(name, v, "a group id")?),
            "type" => {
                ty = Some(match v {
                    "all" => GroupType::All,
                    "select" => GroupType::Select,
                    "indirect" => GroupType::Indirect,
                    "ff" | "fast_failover" => GroupType::FastFailover,
                    _ => {
                        return Err(OfError::Syntax {
                            text: tok.to_string(),
                            expected: "type=all|select|indirect|ff".into(),
                        })
                    }
                })
            }
            "selection_method" => {
                if v != "hash" && v != "dp_hash" {
                    return Err(OfError::Syntax {
                        text: tok.to_string(),
                        expected: "selection_method=hash or dp_hash".into(),
                    });
                }
                method = Some(v);
            }
            "selection_method_param" => param = num::<u64>(name, v, "a 64-bit selection method parameter")?,
            "duration" | "ref_count" | "packet_count" | "byte_count" => {}
            _ if tok.starts_with("fields(") && tok.ends_with(')') => {
                let inner = &tok["fields(".len()..tok.len() - 1];
                fields = Some(parse_hash_fields(inner)?);
            }
            "fields" => fields = Some(parse_hash_fields(v)?),
            _ => {
                return Err(OfError::Syntax {
                    text: tok.to_string(),
                    expected: "group_id=, type=, selection_method=, fields(...) or bucket=".into(),
                })
            }
        }
    }
    let id = id.ok_or_else(|| OfError::Syntax { text: line.to_string(), expected: "group_id=N".into() })?;
    let ty =
        ty.ok_or_else(|| OfError::Syntax { text: line.to_string(), expected: "type=all|select|indirect|ff".into() })?;
    let mut buckets = Vec::new();
    let mut rest = buckets_text;
    while !rest.is_empty() {
        let body_start = "bucket=".len();
        let next = find_token(&rest[body_start..], "bucket=").map(|i| i + body_start);
        let (this, after) = match next {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let body = this[body_start..].trim_end_matches([',', ' ', '\t']);
        buckets.push(parse_bucket(body, buckets.len() as u32, names)?);
        rest = after;
    }
    let selection = match method {
        None if fields.is_some() => {
            return Err(OfError::Syntax {
                text: line.to_string(),
                expected: "fields(...) with selection_method=hash".into(),
            })
        }
        None => Selection::Default,
        Some("hash") => Selection::Hash,
        _ => Selection::DpHash { param },
    };
    if fields.is_some() && selection != Selection::Hash {
        return Err(OfError::Syntax {
            text: line.to_string(),
            expected: "fields(...) with selection_method=hash".into(),
        });
    }
    let g = Group { id, ty, buckets, fields, selection };
    g.validate()?;
    Ok(g)
}

fn parse_hash_fields(s: &str) -> Result<Vec<Field>, OfError> {
    split_top(s)?
        .into_iter()
        .map(|n| {
            Field::from_name(n)
                .ok_or_else(|| OfError::Flow(kairo_flow::FlowError::UnknownField { name: n.to_string() }))
        })
        .collect()
}

fn parse_bucket(body: &str, default_id: u32, names: &PortNames) -> Result<Bucket, OfError> {
    let mut b = Bucket { id: default_id, weight: 1, watch_port: None, watch_group: None, actions: Vec::new() };
    let (props, actions) = match find_token(body, "actions=") {
        Some(i) => (&body[..i], Some(&body[i + "actions=".len()..])),
        None => ("", Some(body)),
    };
    for tok in split_top(props)? {
        let (name, v) = tok.split_once([':', '=']).ok_or_else(|| OfError::Syntax {
            text: tok.to_string(),
            expected: "bucket_id:, weight:, watch_port:, watch_group: or actions=".into(),
        })?;
        match name {
            "bucket_id" => b.id = num(name, v, "a bucket id")?,
            "weight" => b.weight = num(name, v, "a weight 0-65535")?,
            "watch_port" => {
                b.watch_port = Some(match names.resolve(v)? {
                    Some(p) => p,
                    None => num(name, v, "a port number")?,
                })
            }
            "watch_group" => b.watch_group = Some(num(name, v, "a group id")?),
            _ => {
                return Err(OfError::Syntax {
                    text: tok.to_string(),
                    expected: "bucket_id:, weight:, watch_port:, watch_group: or actions=".into(),
                })
            }
        }
    }
    let actions = actions.unwrap_or("");
    // Plain bucket text may still carry properties before the actions.
    let mut acts = Vec::new();
    for tok in split_top(actions)? {
        if let Some((name, v)) = tok.split_once(':') {
            match name {
                "weight" => {
                    b.weight = num(name, v, "a weight 0-65535")?;
                    continue;
                }
                "watch_port" => {
                    b.watch_port = Some(num(name, v, "a port number")?);
                    continue;
                }
                "watch_group" => {
                    b.watch_group = Some(num(name, v, "a group id")?);
                    continue;
                }
                "bucket_id" => {
                    b.id = num(name, v, "a bucket id")?;
                    continue;
                }
                _ => {}
            }
        }
        acts.push(tok);
    }
    b.actions = parse_action_list_in(&acts.join(","), names)?;
    // A bucket knows nothing of the packet: set-VLAN-if-needed pushes.
    crate::action::normalize_vlan(&mut b.actions, false);
    Ok(b)
}

/// A table-miss directive: `#@ table=N miss=drop|continue|continue:M`. It lives
/// in a comment so the same file still loads into real Open vSwitch.
fn parse_miss_directive(s: &str) -> Result<(u8, MissBehavior), OfError> {
    let mut table = None;
    let mut miss = None;
    for tok in split_top(s)? {
        match tok.split_once('=') {
            Some(("table", v)) => table = Some(table_num("table", v)?),
            Some(("miss", "drop")) => miss = Some(MissBehavior::Drop),
            Some(("miss", v)) if v == "continue" || v.starts_with("continue:") => {
                miss = Some(match v.strip_prefix("continue:") {
                    Some(t) => MissBehavior::Continue(table_num("continue", t)?),
                    None => MissBehavior::Continue(u8::MAX), // resolved to table+1 below
                })
            }
            _ => {
                return Err(OfError::Syntax {
                    text: tok.to_string(),
                    expected: "`#@ table=N miss=drop|continue[:M]`".into(),
                })
            }
        }
    }
    let t = table
        .ok_or_else(|| OfError::Syntax { text: s.to_string(), expected: "table=N in the miss directive".into() })?;
    let m =
        match miss.ok_or_else(|| OfError::Syntax { text: s.to_string(), expected: "miss=drop|continue[:M]".into() })? {
            MissBehavior::Continue(u8::MAX) => {
                MissBehavior::Continue(t.checked_add(1).filter(|n| *n < 255).ok_or_else(|| OfError::Syntax {
                    text: s.to_string(),
                    expected: format!("a table that has a next one to continue to (table {t} is the last)"),
                })?)
            }
            m => m,
        };
    if let MissBehavior::Continue(n) = m {
        if n <= t {
            return Err(OfError::Syntax {
                text: s.to_string(),
                expected: format!("a later table than {t} to continue to"),
            });
        }
    }
    Ok((t, m))
}

/// A parse error in a file: the line number (1-based), the line, the cause.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {error}\n  | {text}")]
pub struct FileError {
    pub line: usize,
    pub text: String,
    pub error: OfError,
}

/// The contents of a flow file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlowFile {
    pub rules: Vec<Rule>,
    pub misses: Vec<(u8, MissBehavior)>,
}

fn is_header(line: &str) -> bool {
    // `ovs-ofctl dump-flows` / `dump-groups` reply headers.
    line.starts_with("OFPST_") || line.starts_with("NXST_") || line.starts_with("OFPT_")
}

/// Parses a flow file: one flow a line, `#` comments, `#@` table-miss directives.
pub fn parse_flow_file(text: &str) -> Result<FlowFile, FileError> {
    parse_flow_file_in(text, &PortNames::NONE)
}

/// [`parse_flow_file`] with ports that may be given by name.
pub fn parse_flow_file_in(text: &str, names: &PortNames) -> Result<FlowFile, FileError> {
    let mut out = FlowFile::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |error| FileError { line: i + 1, text: raw.to_string(), error };
        if let Some(d) = line.strip_prefix("#@") {
            out.misses.push(parse_miss_directive(d).map_err(err)?);
            continue;
        }
        if line.is_empty() || line.starts_with('#') || is_header(line) {
            continue;
        }
        let rule = parse_flow_in(line, Some(true), names).and_then(FlowSpec::into_rule).map_err(err)?;
        out.rules.push(rule);
    }
    Ok(out)
}

/// Parses a group file: one group a line, `#` comments.
pub fn parse_group_file(text: &str) -> Result<Vec<Group>, FileError> {
    parse_group_file_in(text, &PortNames::NONE)
}

/// [`parse_group_file`] with ports that may be given by name.
pub fn parse_group_file_in(text: &str, names: &PortNames) -> Result<Vec<Group>, FileError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || is_header(line) {
            continue;
        }
        out.push(parse_group_in(line, names).map_err(|error| FileError {
            line: i + 1,
            text: raw.to_string(),
            error,
        })?);
    }
    Ok(out)
}

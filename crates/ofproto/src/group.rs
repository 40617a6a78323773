//! OpenFlow groups: all, select, indirect and fast_failover, with their buckets.
//!
//! Invariant: a [`Group`] that validates is executable: an indirect group has
//! exactly one bucket, hash fields are known fields, bucket ids are unique.

use kairo_flow::Field;

use crate::action::{format_action_list, Action};
use crate::OfError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupType {
    All,
    Select,
    Indirect,
    FastFailover,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub id: u32,
    pub weight: u16,
    pub watch_port: Option<u32>,
    pub watch_group: Option<u32>,
    pub actions: Vec<Action>,
}

/// How a select group picks its bucket (`selection_method`, as Open vSwitch).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Selection {
    /// None given: hashed in the datapath (as [`Selection::DpHash`] with
    /// `sym_l4`, basis 0) when the buckets' weights fit 64 hash values,
    /// else in translation over the symmetric 5-tuple.
    #[default]
    Default,
    /// `selection_method=hash`: in translation, over `fields` (without
    /// fields, as [`Selection::Default`] falling back).
    Hash,
    /// `selection_method=dp_hash` with `selection_method_param` (the hash
    /// algorithm in its high 32 bits, the basis in its low): in the
    /// datapath when the weights fit 256 hash values.
    DpHash { param: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    pub id: u32,
    pub ty: GroupType,
    pub buckets: Vec<Bucket>,
    /// Select groups: the fields the bucket hash reads (`selection_method=hash,fields(...)`);
    /// `None` hashes the symmetric L4 5-tuple, as Open vSwitch's default.
    pub fields: Option<Vec<Field>>,
    pub selection: Selection,
}

impl Group {
    pub fn validate(&self) -> Result<(), OfError> {
        let bad = |e: &str| Err(OfError::Syntax { text: self.to_string(), expected: e.to_string() });
        if self.ty == GroupType::Indirect && self.buckets.len() != 1 {
            return bad("exactly one bucket in an indirect group");
        }
        let mut ids: Vec<u32> = self.buckets.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.buckets.len() {
            return bad("unique bucket ids");
        }
        Ok(())
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ty = match self.ty {
            GroupType::All => "all",
            GroupType::Select => "select",
            GroupType::Indirect => "indirect",
            GroupType::FastFailover => "ff",
        };
        write!(f, "group_id={},type={ty}", self.id)?;
        match self.selection {
            Selection::Default => {}
            Selection::Hash => write!(f, ",selection_method=hash")?,
            Selection::DpHash { param: 0 } => write!(f, ",selection_method=dp_hash")?,
            Selection::DpHash { param } => write!(f, ",selection_method=dp_hash,selection_method_param={param}")?,
        }
        if let Some(fields) = &self.fields {
            let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
            write!(f, ",fields({})", names.join(","))?;
        }
        for b in &self.buckets {
            write!(f, ",bucket=bucket_id:{}", b.id)?;
            if self.ty == GroupType::Select {
                write!(f, ",weight:{}", b.weight)?;
            }
            if let Some(p) = b.watch_port {
                write!(f, ",watch_port:{p}")?;
            }
            if let Some(g) = b.watch_group {
                write!(f, ",watch_group:{g}")?;
            }
            write!(f, ",actions={}", format_action_list(&b.actions))?;
        }
        Ok(())
    }
}

//! The switch's port names, as flows may give ports by name (`in_port=pod1`,
//! `output:"antrea-gw0"`, `watch_port:uplink`) the way `ovs-ofctl --names`
//! takes them against a running bridge.
//!
//! Owns the name → OpenFlow port table and the rule for reading a port
//! given as text. Invariant: a name resolves to exactly one port (a table
//! refuses a second port of the same name), and the reserved ports' names
//! (LOCAL, IN_PORT, CONTROLLER, ...) and numbers are never looked up, so
//! what parsed without names parses the same with them. A name that looks
//! like a number or a reserved port is given in double quotes.

use std::collections::BTreeMap;

use crate::OfError;

/// Port names known to a parse: interface name → OpenFlow port number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortNames {
    by_name: BTreeMap<String, u32>,
}

/// The reserved ports' names as ovs-ofctl reads them (any case).
const RESERVED: [&str; 10] =
    ["in_port", "table", "normal", "flood", "all", "controller", "local", "none", "any", "unset"];

impl PortNames {
    /// No names: every port is given by number.
    pub const NONE: PortNames = PortNames { by_name: BTreeMap::new() };

    /// Adds `name` for `port`; an error if the name is taken, empty, or
    /// one a port cannot have (a reserved port's, a number's, or one with
    /// a quote, a comma, parentheses, brackets or whitespace).
    pub fn insert(&mut self, name: &str, port: u32) -> Result<(), OfError> {
        let bad = |why: &str| OfError::Syntax { text: name.to_string(), expected: format!("a port name ({why})") };
        if name.is_empty()
            || name.contains(['"', ',', '(', ')', '[', ']', '=', ':'])
            || name.contains(char::is_whitespace)
        {
            return Err(bad("not empty, without quotes, commas, parentheses, brackets, `=`, `:` or spaces"));
        }
        if let Some(&other) = self.by_name.get(name) {
            if other != port {
                return Err(bad(&format!("`{name}` already names port {other}")));
            }
        }
        self.by_name.insert(name.to_string(), port);
        Ok(())
    }

    /// The port named `name`, if the table has it.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The names, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.by_name.iter().map(|(n, p)| (n.as_str(), *p))
    }

    /// A port given as `text`: `Some(port)` for a name the table has
    /// (quoted or bare), `None` for a number or a reserved port's name
    /// (the caller reads those as it always has); an error for any other
    /// text, naming it and the names there are.
    pub fn resolve(&self, text: &str) -> Result<Option<u32>, OfError> {
        let quoted = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
        let name = if quoted { &text[1..text.len() - 1] } else { text };
        if !quoted
            && (kairo_flow::parse::parse_uint(text).is_some() || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(text)))
        {
            return Ok(None);
        }
        if let Some(p) = self.get(name) {
            return Ok(Some(p));
        }
        // Not a name we have: a bare word goes on to the number parser
        // (whose error says what a port is), a quoted one is an unknown name.
        if !quoted && self.is_empty() {
            return Ok(None);
        }
        let known: Vec<&str> = self.by_name.keys().map(String::as_str).take(8).collect();
        let more = if self.by_name.len() > known.len() { ", ..." } else { "" };
        Err(OfError::Syntax {
            text: text.to_string(),
            expected: if self.is_empty() {
                "a port number (no port names are known here)".to_string()
            } else {
                format!("a port number or one of the switch's port names ({}{more})", known.join(", "))
            },
        })
    }
}

/// One port of a port-configuration file: its OpenFlow number and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortLine {
    pub port: u32,
    pub name: String,
}

/// Reads a port-configuration file, one port a line: `OFPORT NAME
/// [SETTING ...]` (or `LOCAL NAME`), `#` starting a comment. Settings
/// (`tag=`, `trunks=`, `vlan_mode=`, `no-flood`, ...) belong to the
/// learning switch (NORMAL), which kairo does not model yet: a line with
/// one is refused, naming it. Two lines may not share a number or a name.
pub fn parse_port_config(text: &str) -> Result<(Vec<PortLine>, PortNames), crate::FileError> {
    let mut lines = Vec::new();
    let mut names = PortNames::default();
    for (i, raw) in text.lines().enumerate() {
        let err = |error| crate::FileError { line: i + 1, text: raw.to_string(), error };
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(num), Some(name)) = (words.next(), words.next()) else {
            return Err(err(OfError::Syntax { text: line.to_string(), expected: "OFPORT NAME [SETTING ...]".into() }));
        };
        let port = match num {
            "LOCAL" | "local" => crate::action::OFPP_LOCAL,
            _ => kairo_flow::parse::parse_uint(num).filter(|p| (1..0xff00).contains(p)).map(|p| p as u32).ok_or_else(
                || err(OfError::Syntax { text: num.to_string(), expected: "a port number 1-65279, or LOCAL".into() }),
            )?,
        };
        if let Some(setting) = words.next() {
            return Err(err(OfError::Unsupported {
                what: setting.to_string(),
                why: "port settings (tag=, trunks=, vlan_mode=, no-flood, ...) are for NORMAL, which kairo does not model yet"
                    .into(),
            }));
        }
        if lines.iter().any(|l: &PortLine| l.port == port) {
            return Err(err(OfError::Syntax {
                text: num.to_string(),
                expected: "a port number no other line has".into(),
            }));
        }
        names.insert(name, port).map_err(err)?;
        lines.push(PortLine { port, name: name.to_string() });
    }
    Ok((lines, names))
}

//! The switch's ports as configuration gives them: their names, as flows
//! may give ports by name (`in_port=pod1`, `output:"antrea-gw0"`,
//! `watch_port:uplink`) the way `ovs-ofctl --names` takes them against a
//! running bridge, their VLAN settings for `NORMAL` (`ovs-vsctl set
//! port`'s `vlan_mode`, `tag`, `trunks`) and their OpenFlow port-config
//! bits (`ovs-ofctl mod-port`'s `no-flood`, `no-forward`, ...).
//!
//! Owns the name → OpenFlow port table, the rule for reading a port given
//! as text, and the VLAN settings' meaning. Invariants: a name resolves to
//! exactly one port (a table refuses a second port of the same name), and
//! the reserved ports' names (LOCAL, IN_PORT, CONTROLLER, ...) and numbers
//! are never looked up, so what parsed without names parses the same with
//! them (a name that looks like a number or a reserved port is given in
//! double quotes); a [`PortSettings`] is always resolved the way Open
//! vSwitch's bridge resolves the columns (a mode, the port's VLAN, the
//! VLANs it trunks), so translation reads it without defaults of its own.

use std::collections::{BTreeMap, BTreeSet};

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

/// How a port carries VLANs (Open vSwitch's `vlan_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VlanMode {
    /// Tagged frames of the trunked VLANs, untagged ones as VLAN 0.
    #[default]
    Trunk,
    /// Untagged frames only, in the port's VLAN.
    Access,
    /// The port's VLAN tagged, untagged frames taken into it.
    NativeTagged,
    /// The port's VLAN untagged (in and out), the other trunked VLANs tagged.
    NativeUntagged,
}

impl VlanMode {
    fn name(self) -> &'static str {
        match self {
            VlanMode::Trunk => "trunk",
            VlanMode::Access => "access",
            VlanMode::NativeTagged => "native-tagged",
            VlanMode::NativeUntagged => "native-untagged",
        }
    }
}

/// A port's VLAN settings for `NORMAL`, resolved as Open vSwitch's bridge
/// resolves `vlan_mode`, `tag` and `trunks`: no mode is access with a tag
/// and trunk without; an access or native port's VLAN is its tag (0
/// without); a native port trunks its own VLAN and never VLAN 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSettings {
    pub mode: VlanMode,
    /// The port's VLAN (access and native modes).
    pub vlan: u16,
    /// The VLANs it trunks (`None`: all of them).
    pub trunks: Option<BTreeSet<u16>>,
    /// The columns as given, for display (`tag=10 trunks=20,30`).
    given: (Option<VlanMode>, Option<u16>, Option<BTreeSet<u16>>),
    /// OpenFlow port-config bits set (`no-flood` etc.: [`PortConfig`]).
    pub config: PortConfig,
}

/// A port's OpenFlow configuration bits (`OFPPC_*`, as `ovs-ofctl
/// mod-port` sets them), as translation reads them: FLOOD and NORMAL's
/// flooding leave out a `no-flood` port (ALL does not), nothing is output
/// to a `no-forward` port, a packet received on a `no-receive` port is
/// looked up in table 0 and goes nowhere, and a `down` port is not live
/// for fast-failover groups (output to it is still made: the datapath
/// port is what is down). `no-packet-in` changes no translation: Open
/// vSwitch reads it only for an OpenFlow 1.0 table miss sent to the
/// controller, which kairo's tables do not have (a miss drops or goes on),
/// and leaves controller actions alone (checked with its `ofproto/trace`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortConfig(pub u32);

impl PortConfig {
    /// `OFPPC_PORT_DOWN`.
    pub const DOWN: u32 = 1 << 0;
    /// `OFPPC_NO_RECV`.
    pub const NO_RECV: u32 = 1 << 2;
    /// `OFPPC_NO_FLOOD` (OpenFlow 1.0's; Open vSwitch keeps it).
    pub const NO_FLOOD: u32 = 1 << 4;
    /// `OFPPC_NO_FWD`.
    pub const NO_FWD: u32 = 1 << 5;
    /// `OFPPC_NO_PACKET_IN`.
    pub const NO_PACKET_IN: u32 = 1 << 6;
    /// The words, as `ovs-ofctl mod-port` takes them, and their bits.
    const WORDS: [(&'static str, u32); 5] = [
        ("down", Self::DOWN),
        ("no-receive", Self::NO_RECV),
        ("no-flood", Self::NO_FLOOD),
        ("no-forward", Self::NO_FWD),
        ("no-packet-in", Self::NO_PACKET_IN),
    ];

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// The bit a settings word sets (`no-recv` and `no-fwd` as well).
    fn of_word(w: &str) -> Option<u32> {
        match w {
            "no-recv" => Some(Self::NO_RECV),
            "no-fwd" => Some(Self::NO_FWD),
            _ => Self::WORDS.iter().find(|(n, _)| *n == w).map(|(_, b)| *b),
        }
    }

    /// The words of the bits set.
    pub fn words(self) -> impl Iterator<Item = &'static str> {
        Self::WORDS.into_iter().filter(move |(_, b)| self.has(*b)).map(|(n, _)| n)
    }
}

impl PortSettings {
    /// A port without settings: a trunk of every VLAN.
    pub const TRUNK: PortSettings =
        PortSettings { mode: VlanMode::Trunk, vlan: 0, trunks: None, given: (None, None, None), config: PortConfig(0) };

    /// The settings from the columns as `ovs-vsctl set port` takes them.
    pub fn new(mode: Option<VlanMode>, tag: Option<u16>, trunks: Option<BTreeSet<u16>>) -> PortSettings {
        let given = (mode, tag, trunks.clone());
        let mode = mode.unwrap_or(if tag.is_some() { VlanMode::Access } else { VlanMode::Trunk });
        let vlan = if mode == VlanMode::Trunk { 0 } else { tag.unwrap_or(0) };
        // An empty trunks column means every VLAN.
        let trunks = trunks.filter(|t| !t.is_empty());
        let trunks = match mode {
            VlanMode::Access => None,
            VlanMode::Trunk => trunks,
            VlanMode::NativeTagged | VlanMode::NativeUntagged => {
                if vlan != 0 && trunks.as_ref().is_none_or(|t| !t.contains(&vlan) || t.contains(&0)) {
                    let mut t = trunks.unwrap_or_else(|| (0..4096).collect());
                    t.insert(vlan);
                    t.remove(&0);
                    Some(t)
                } else {
                    trunks
                }
            }
        };
        PortSettings { mode, vlan, trunks, given, config: PortConfig(0) }
    }

    /// Reads settings words: `tag=N`, `trunks=N,M,...`, `vlan_mode=MODE`,
    /// and the OpenFlow port-config words `no-flood`, `no-forward`,
    /// `no-receive` and `down` ([`PortConfig`]). Anything else is an error
    /// naming it.
    pub fn parse<'w>(words: impl IntoIterator<Item = &'w str>) -> Result<PortSettings, OfError> {
        let (mut mode, mut tag, mut trunks) = (None, None, None);
        let mut config = 0;
        let vid = |w: &str, v: &str| {
            kairo_flow::parse::parse_uint(v)
                .filter(|v| *v < 4096)
                .map(|v| v as u16)
                .ok_or_else(|| OfError::Syntax { text: w.to_string(), expected: "a VLAN id 0-4095".into() })
        };
        for w in words {
            let (name, v) = w.split_once('=').unwrap_or((w, ""));
            match name {
                "tag" => tag = Some(vid(w, v)?),
                "trunks" => {
                    let list = v.split(',').map(str::trim).filter(|x| !x.is_empty());
                    trunks = Some(list.map(|x| vid(w, x)).collect::<Result<BTreeSet<u16>, _>>()?);
                }
                "vlan_mode" => {
                    mode = Some(match v {
                        "trunk" => VlanMode::Trunk,
                        "access" => VlanMode::Access,
                        "native-tagged" => VlanMode::NativeTagged,
                        "native-untagged" => VlanMode::NativeUntagged,
                        "dot1q-tunnel" => {
                            return Err(OfError::Unsupported {
                                what: w.to_string(),
                                why: "dot1q-tunnel ports are not supported yet".into(),
                            })
                        }
                        _ => {
                            return Err(OfError::Syntax {
                                text: w.to_string(),
                                expected: "vlan_mode=access, trunk, native-tagged or native-untagged".into(),
                            })
                        }
                    })
                }
                _ if v.is_empty() && PortConfig::of_word(name).is_some() => {
                    config |= PortConfig::of_word(name).unwrap_or(0);
                }
                _ => {
                    return Err(OfError::Syntax {
                        text: w.to_string(),
                        expected: "a port setting: tag=N, trunks=N,M,..., vlan_mode=MODE, no-flood, no-forward, \
                                   no-receive, no-packet-in or down"
                            .into(),
                    })
                }
            }
        }
        Ok(PortSettings { config: PortConfig(config), ..PortSettings::new(mode, tag, trunks) })
    }

    /// Does the port trunk VLAN `vid` (Open vSwitch's `xbundle_trunks_vlan`)?
    pub fn trunks_vlan(&self, vid: u16) -> bool {
        self.mode != VlanMode::Access && self.trunks.as_ref().is_none_or(|t| t.contains(&vid))
    }

    /// May a frame whose outer VLAN id is `vid` (0: untagged) come in here?
    pub fn admits(&self, vid: u16) -> bool {
        match self.mode {
            VlanMode::Access => vid == 0,
            VlanMode::NativeTagged | VlanMode::NativeUntagged if vid == 0 => true,
            _ => self.trunks_vlan(vid),
        }
    }

    /// Does a frame in VLAN `vid` (with an inner VLAN `inner`, 0 for none)
    /// go out here (Open vSwitch's `xbundle_includes_vlan`)?
    pub fn includes(&self, vid: u16, inner: u16) -> bool {
        match self.mode {
            VlanMode::Access => vid == self.vlan && inner == 0,
            _ => self.trunks_vlan(vid),
        }
    }

    /// The settings as `ovs-vsctl set port` words (empty: the default trunk).
    pub fn words(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(m) = self.given.0 {
            w.push(format!("vlan_mode={}", m.name()));
        }
        if let Some(t) = self.given.1 {
            w.push(format!("tag={t}"));
        }
        if let Some(t) = &self.given.2 {
            w.push(format!("trunks={}", t.iter().map(u16::to_string).collect::<Vec<_>>().join(",")));
        }
        w.extend(self.config.words().map(str::to_string));
        w
    }
}

impl std::fmt::Display for PortSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words().join(" "))
    }
}

/// One port of a port-configuration file: its OpenFlow number, name and
/// VLAN settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortLine {
    pub port: u32,
    pub name: String,
    pub settings: PortSettings,
}

/// Reads a port-configuration file, one port a line: `OFPORT NAME
/// [SETTING ...]` (or `LOCAL NAME`), `#` starting a comment, each setting
/// `tag=N`, `trunks=N,M,...` or `vlan_mode=access|trunk|native-tagged|
/// native-untagged` (as `ovs-vsctl set port`), or an OpenFlow port-config
/// word: `no-flood`, `no-forward`, `no-receive`, `no-packet-in`, `down` (as
/// `ovs-ofctl mod-port`). Two lines may not share a
/// number or a name.
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
        let settings = PortSettings::parse(words).map_err(err)?;
        if lines.iter().any(|l: &PortLine| l.port == port) {
            return Err(err(OfError::Syntax {
                text: num.to_string(),
                expected: "a port number no other line has".into(),
            }));
        }
        names.insert(name, port).map_err(err)?;
        lines.push(PortLine { port, name: name.to_string(), settings });
    }
    Ok((lines, names))
}

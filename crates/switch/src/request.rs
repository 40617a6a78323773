//! The control protocol's messages: one JSON [`Request`] per line, tagged by
//! its command (`{"cmd": "add-flow", "flow": "..."}`), one JSON [`Reply`] per
//! line; and the parsing of ovs-ofctl-style command lines (`kairo ctl`'s
//! arguments) into requests.
//!
//! Invariant: every request the server can be sent is a [`Request`] value;
//! what a command takes is checked when the request is made (by
//! [`Request::parse`] or by deserialising it), so the server's handler only
//! ever sees well-formed requests, and every error names the command and
//! the text it could not take.

use serde::{Deserialize, Serialize};

/// One request: a command of ovs-ofctl's set and what it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// (Commands that take nothing are empty struct variants, so that unknown
// fields are refused for them too: serde ignores them on unit variants.)
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    AddFlow {
        flow: String,
    },
    /// A flow file's text (one flow a line; applied atomically).
    AddFlows {
        text: String,
    },
    ModFlows {
        #[serde(default)]
        strict: bool,
        flow: String,
    },
    /// Deletes the flows `flow` matches (all of them if `None`).
    DelFlows {
        #[serde(default)]
        strict: bool,
        #[serde(default)]
        flow: Option<String>,
    },
    AddGroup {
        group: String,
    },
    /// A group file's text.
    AddGroups {
        text: String,
    },
    ModGroup {
        group: String,
    },
    /// Deletes group `group_id=N` (all groups if `None`).
    DelGroups {
        #[serde(default)]
        group: Option<String>,
    },
    /// A bundle file's text (applied atomically).
    Bundle {
        text: String,
    },
    DumpFlows {
        #[serde(default)]
        table: Option<u8>,
    },
    /// Attaches an interface as a port: `IF[=OFPORT][,SETTING...]`,
    /// AF_PACKET unless `kind` (or a `type=` setting) is `afxdp` or `tap`.
    AddPort {
        port: String,
        #[serde(default)]
        kind: Option<String>,
    },
    /// Detaches a port, named by number or interface.
    DelPort {
        port: String,
    },
    /// Sets a port's VLAN settings for NORMAL (`tag=N`, `trunks=N,M`,
    /// `vlan_mode=MODE`; none: back to a trunk of every VLAN).
    SetPort {
        port: String,
        #[serde(default)]
        settings: Vec<String>,
    },
    /// NORMAL's learned MACs (as `ovs-appctl fdb/show`).
    FdbShow {},
    /// Forgets NORMAL's learned MACs (as `ovs-appctl fdb/flush`).
    FdbFlush {},
    DumpGroups {},
    DumpMegaflows {},
    /// The connection tracker's connections (of one zone, if given).
    DumpConntrack {
        #[serde(default)]
        zone: Option<u16>,
    },
    /// Removes connections (of one zone, if given).
    FlushConntrack {
        #[serde(default)]
        zone: Option<u16>,
    },
    Show {},
    Stats {},
    Trace {
        packet: String,
    },
    Help {},
}

/// One reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl Reply {
    pub fn output(output: String) -> Reply {
        Reply { ok: true, output, error: String::new() }
    }
    pub fn error(error: String) -> Reply {
        Reply { ok: false, output: String::new(), error }
    }
}

/// The commands, with what each takes (for `help` and error messages).
pub const COMMANDS: &[(&str, &str)] = &[
    ("add-flow", "FLOW"),
    ("add-flows", "FILE (one flow a line; applied atomically)"),
    ("mod-flows", "[--strict] FLOW"),
    ("del-flows", "[--strict] [FLOW]"),
    ("add-group", "GROUP"),
    ("add-groups", "FILE"),
    ("mod-group", "GROUP"),
    ("del-groups", "[group_id=N]"),
    ("bundle", "FILE (lines: flow add|modify|modify_strict|delete|delete_strict SPEC, group add|modify|delete SPEC)"),
    ("add-port", "IF[=OFPORT][,type=KIND][,tag=N|,trunks=N,M|,vlan_mode=MODE...] [type=afpacket|afxdp|tap]"),
    ("del-port", "OFPORT|IF"),
    ("set-port", "OFPORT|IF [tag=N] [trunks=N,M,...] [vlan_mode=access|trunk|native-tagged|native-untagged]"),
    ("fdb-show", ""),
    ("fdb-flush", ""),
    ("dump-flows", "[table=N]"),
    ("dump-groups", ""),
    ("dump-megaflows", ""),
    ("dump-conntrack", "[zone=N]"),
    ("flush-conntrack", "[zone=N]"),
    ("show", ""),
    ("stats", ""),
    ("trace", "PACKET (ovs-ofctl flow syntax)"),
    ("help", ""),
];

/// Commands whose argument names a file the client reads and sends.
pub fn takes_file(cmd: &str) -> bool {
    matches!(cmd, "add-flows" | "add-groups" | "bundle")
}

/// `help`'s text.
pub fn help() -> String {
    COMMANDS.iter().map(|(c, a)| format!("{c} {a}\n")).collect()
}

fn usage(cmd: &str) -> String {
    COMMANDS.iter().find(|(c, _)| *c == cmd).map(|(c, a)| format!("{c} {a}")).unwrap_or_default()
}

impl Request {
    /// The command's name, as ovs-ofctl spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Request::AddFlow { .. } => "add-flow",
            Request::AddFlows { .. } => "add-flows",
            Request::ModFlows { .. } => "mod-flows",
            Request::DelFlows { .. } => "del-flows",
            Request::AddGroup { .. } => "add-group",
            Request::AddGroups { .. } => "add-groups",
            Request::ModGroup { .. } => "mod-group",
            Request::DelGroups { .. } => "del-groups",
            Request::Bundle { .. } => "bundle",
            Request::DumpFlows { .. } => "dump-flows",
            Request::AddPort { .. } => "add-port",
            Request::DelPort { .. } => "del-port",
            Request::SetPort { .. } => "set-port",
            Request::FdbShow {} => "fdb-show",
            Request::FdbFlush {} => "fdb-flush",
            Request::DumpGroups {} => "dump-groups",
            Request::DumpMegaflows {} => "dump-megaflows",
            Request::DumpConntrack { .. } => "dump-conntrack",
            Request::FlushConntrack { .. } => "flush-conntrack",
            Request::Show {} => "show",
            Request::Stats {} => "stats",
            Request::Trace { .. } => "trace",
            Request::Help {} => "help",
        }
    }

    /// The request for an ovs-ofctl-style command line: `cmd` and its
    /// arguments (a file command's argument is the file's text). Errors
    /// name the command and what it takes.
    pub fn parse(cmd: &str, args: &[String]) -> Result<Request, String> {
        let one = || match args {
            [a] => Ok(a.clone()),
            _ => Err(format!("`{cmd}` takes one argument: {}", usage(cmd))),
        };
        let optional = |args: &[String]| match args {
            [] => Ok(None),
            [a] => Ok(Some(a.clone())),
            _ => Err(format!("`{cmd}` takes at most one argument: {}", usage(cmd))),
        };
        let none = || match args {
            [] => Ok(()),
            _ => Err(format!("`{cmd}` takes no argument")),
        };
        let (strict, rest) = match args.first() {
            Some(a) if a == "--strict" => (true, &args[1..]),
            _ => (false, args),
        };
        Ok(match cmd {
            "add-flow" => Request::AddFlow { flow: one()? },
            "add-flows" => Request::AddFlows { text: one()? },
            "mod-flows" => match rest {
                [flow] => Request::ModFlows { strict, flow: flow.clone() },
                _ => return Err(format!("`{cmd}` takes one argument: {}", usage(cmd))),
            },
            "del-flows" => Request::DelFlows { strict, flow: optional(rest)? },
            "add-group" => Request::AddGroup { group: one()? },
            "add-groups" => Request::AddGroups { text: one()? },
            "mod-group" => Request::ModGroup { group: one()? },
            "del-groups" => Request::DelGroups { group: optional(args)? },
            "bundle" => Request::Bundle { text: one()? },
            "dump-flows" => Request::DumpFlows {
                table: optional(args)?
                    .map(|a| {
                        a.strip_prefix("table=")
                            .and_then(|t| t.parse::<u8>().ok())
                            .ok_or_else(|| format!("dump-flows: expected `table=N` (0..254), got `{a}`"))
                    })
                    .transpose()?,
            },
            "add-port" => match args {
                [p] => Request::AddPort { port: p.clone(), kind: None },
                [p, t] => match t.strip_prefix("type=") {
                    Some(k @ ("afpacket" | "afxdp" | "tap")) => {
                        Request::AddPort { port: p.clone(), kind: Some(k.to_string()) }
                    }
                    _ => {
                        return Err(format!(
                            "add-port: expected `type=afpacket`, `type=afxdp` or `type=tap`, got `{t}`"
                        ))
                    }
                },
                _ => return Err(format!("`{cmd}` takes one or two arguments: {}", usage(cmd))),
            },
            "del-port" => Request::DelPort { port: one()? },
            "set-port" => match args {
                [p, settings @ ..] => Request::SetPort { port: p.clone(), settings: settings.to_vec() },
                [] => return Err(format!("`{cmd}` takes a port and its settings: {}", usage(cmd))),
            },
            "fdb-show" => none().map(|_| Request::FdbShow {})?,
            "fdb-flush" => none().map(|_| Request::FdbFlush {})?,
            "dump-groups" => none().map(|_| Request::DumpGroups {})?,
            "dump-megaflows" => none().map(|_| Request::DumpMegaflows {})?,
            "dump-conntrack" | "flush-conntrack" => {
                let zone = optional(args)?
                    .map(|a| {
                        a.strip_prefix("zone=")
                            .and_then(|z| z.parse::<u16>().ok())
                            .ok_or_else(|| format!("{cmd}: expected `zone=N` (0..65535), got `{a}`"))
                    })
                    .transpose()?;
                if cmd == "dump-conntrack" {
                    Request::DumpConntrack { zone }
                } else {
                    Request::FlushConntrack { zone }
                }
            }
            "show" => none().map(|_| Request::Show {})?,
            "stats" => none().map(|_| Request::Stats {})?,
            "trace" => Request::Trace { packet: one()? },
            "help" => none().map(|_| Request::Help {})?,
            _ => {
                return Err(format!(
                    "unknown command `{cmd}`; commands: {}",
                    COMMANDS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_lines_become_requests_and_round_trip_through_json() {
        let cases = [
            ("add-flow", args(&["in_port=1 actions=drop"])),
            ("mod-flows", args(&["--strict", "priority=5 actions=drop"])),
            ("del-flows", args(&[])),
            ("del-flows", args(&["--strict", "priority=5"])),
            ("del-groups", args(&["group_id=3"])),
            ("dump-flows", args(&["table=7"])),
            ("add-port", args(&["veth0=7", "type=tap"])),
            ("del-port", args(&["7"])),
            ("set-port", args(&["veth0", "tag=10", "trunks=10,20"])),
            ("fdb-show", args(&[])),
            ("fdb-flush", args(&[])),
            ("dump-megaflows", args(&[])),
            ("dump-conntrack", args(&["zone=5"])),
            ("flush-conntrack", args(&[])),
            ("trace", args(&["in_port=1"])),
            ("help", args(&[])),
        ];
        for (cmd, a) in cases {
            let r = Request::parse(cmd, &a).unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(r.name(), cmd);
            let text = serde_json::to_string(&r).unwrap();
            assert!(text.contains(&format!("\"cmd\":\"{cmd}\"")), "{text}");
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        }
        assert_eq!(
            Request::parse("del-flows", &args(&["--strict", "priority=5"])).unwrap(),
            Request::DelFlows { strict: true, flow: Some("priority=5".into()) }
        );
    }

    #[test]
    fn bad_command_lines_and_messages_are_named() {
        let e = Request::parse("frobnicate", &[]).unwrap_err();
        assert!(e.contains("unknown command `frobnicate`"), "{e}");
        let e = Request::parse("dump-flows", &args(&["table=x"])).unwrap_err();
        assert!(e.contains("table=x"), "{e}");
        let e = Request::parse("add-flow", &args(&["a", "b"])).unwrap_err();
        assert!(e.contains("add-flow FLOW"), "{e}");
        let e = Request::parse("dump-conntrack", &args(&["zone=70000"])).unwrap_err();
        assert!(e.contains("zone=70000"), "{e}");
        let e = Request::parse("show", &args(&["x"])).unwrap_err();
        assert!(e.contains("show"), "{e}");
        for bad in [r#"{"cmd":"add-flow"}"#, r#"{"cmd":"nope"}"#, r#"{"cmd":"show","extra":1}"#, r#"{"flow":"x"}"#] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }
}

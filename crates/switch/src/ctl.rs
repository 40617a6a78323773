//! The control socket's commands: what each [`Request`] does (ovs-ofctl's
//! output conventions), and the client used by `kairo ctl`. The socket
//! itself is served by [`crate::server`].
//!
//! Invariants: a request is applied whole or not at all (multi-line requests
//! such as add-flows and bundle become one atomic bundle); a malformed request
//! gets an error reply naming the line and the text, and leaves the switch
//! state unchanged; the reply to an update is sent only after the update and
//! its cache maintenance are complete. Each connection has its own thread, so
//! several clients work at once.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::{lock, PortCounters, Switch};
use kairo_datapath::DpStats;
use kairo_maintain::flowmod::{parse_command_in, FlowMod};
use kairo_ofproto::{parse_flow_file_in, parse_group_file_in, PortNames};

pub use crate::request::{help, takes_file, Reply, Request, COMMANDS};
pub use crate::server::{serve, serve_with, Limits, Served};

/// The bundle line for an ovs-ofctl command and its argument (the inverse
/// of [`parse_bundle`]'s mapping); None for a command a bundle cannot hold.
pub fn bundle_line(cmd: &str, arg: &str) -> Option<String> {
    let verb = match cmd.trim() {
        "add-flow" | "add-flows" => "flow add",
        "mod-flows" => "flow modify",
        "--strict mod-flows" | "mod-flows --strict" => "flow modify_strict",
        "del-flows" => "flow delete",
        "--strict del-flows" | "del-flows --strict" => "flow delete_strict",
        "add-group" | "add-groups" => "group add",
        "mod-group" => "group modify",
        "del-groups" => "group delete",
        _ => return None,
    };
    Some(format!("{verb} {arg}"))
}

/// Parses a bundle file (ovs-ofctl's `--bundle` line format).
pub fn parse_bundle(text: &str, names: &PortNames) -> Result<FlowMod, String> {
    let mut mods = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: `{raw}`: {e}", i + 1);
        let mut it = line.splitn(3, char::is_whitespace);
        let (kind, op, rest) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
        let cmd = match (kind, op) {
            ("flow", "add") => "add-flow",
            ("flow", "modify") => "mod-flows",
            ("flow", "modify_strict") => "--strict mod-flows",
            ("flow", "delete") => "del-flows",
            ("flow", "delete_strict") => "--strict del-flows",
            ("group", "add") => "add-group",
            ("group", "modify") => "mod-group",
            ("group", "delete") => "del-groups",
            _ => {
                return Err(at(
                    "expected `flow add|modify|modify_strict|delete|delete_strict` or `group add|modify|delete`".into(),
                ))
            }
        };
        mods.push(parse_command_in(cmd, rest, names).map_err(|e| at(e.to_string()))?);
    }
    Ok(FlowMod::Bundle(mods))
}

impl Switch {
    /// Runs one control command; `Ok` carries the output text.
    pub fn handle(&self, req: &Request) -> Result<String, String> {
        let update = |fm: FlowMod| self.apply(&fm).map(|_| String::new()).map_err(|e| e.to_string());
        // Flows and groups may give ports by the switch's names for them.
        let names = self.port_names();
        let command = |name: &str, arg: &str| parse_command_in(name, arg, &names).map_err(|e| e.to_string());
        let strict = |s: bool, name: &str| if s { format!("--strict {name}") } else { name.to_string() };
        match req {
            Request::AddFlow { flow } => update(command("add-flow", flow)?),
            Request::AddGroup { group } => update(command("add-group", group)?),
            Request::ModGroup { group } => update(command("mod-group", group)?),
            Request::ModFlows { strict: s, flow } => update(command(&strict(*s, "mod-flows"), flow)?),
            Request::DelFlows { strict: s, flow } => {
                update(command(&strict(*s, "del-flows"), flow.as_deref().unwrap_or(""))?)
            }
            Request::DelGroups { group } => update(command("del-groups", group.as_deref().unwrap_or(""))?),
            Request::AddFlows { text } => {
                let ff = parse_flow_file_in(text, &names).map_err(|e| e.to_string())?;
                let mut mods: Vec<FlowMod> = ff.rules.into_iter().map(FlowMod::Add).collect();
                mods.extend(ff.misses.into_iter().map(|(t, m)| FlowMod::SetMiss(t, m)));
                update(FlowMod::Bundle(mods))
            }
            Request::AddGroups { text } => {
                update(FlowMod::AddGroups(parse_group_file_in(text, &names).map_err(|e| e.to_string())?))
            }
            Request::Bundle { text } => update(parse_bundle(text, &names)?),
            Request::AddPort { port, kind } => {
                let spec = crate::port::parse_port_spec(port).map_err(|e| e.to_string())?;
                let kind = match (kind.as_deref().map(crate::port::PortKind::parse).transpose()?, spec.kind) {
                    (Some(a), Some(b)) if a != b => return Err(format!("add-port {port}: two port types given")),
                    (a, b) => a.or(b).unwrap_or(crate::port::PortKind::AfPacket),
                };
                let (name, settings) = (spec.name, spec.settings);
                let ofport = spec.ofport.unwrap_or_else(|| self.free_ofport());
                let io = kind.open(&name).map_err(|e| e.to_string())?;
                self.add_port(crate::Attached { ofport, name, io, counters: Default::default() })?;
                if settings.is_some() {
                    update(FlowMod::SetPortSettings(ofport, settings))?;
                }
                Ok(format!("port {ofport} added\n"))
            }
            Request::DelPort { port } => self.del_port(port).map(|_| String::new()),
            Request::SetPort { port, settings } => {
                let ofport = self.port_number(port)?;
                let s = match settings.as_slice() {
                    [] => None,
                    words => Some(
                        kairo_ofproto::ports::PortSettings::parse(words.iter().map(String::as_str))
                            .map_err(|e| format!("set-port {port}: {e}"))?,
                    ),
                };
                update(FlowMod::SetPortSettings(ofport, s))
            }
            Request::FdbShow {} => Ok(self.fdb_show()),
            Request::FdbFlush {} => update(FlowMod::FlushMacs(None)),
            Request::DumpFlows { table } => Ok(self.dump_flows(*table)),
            Request::DumpGroups {} => Ok(self.dump_groups()),
            Request::DumpMegaflows {} => Ok(self.dump_megaflows()),
            Request::DumpConntrack { zone } => {
                let now = self.now_ms();
                Ok(self.ct().dump(*zone, now).iter().map(|e| format!("{e}\n")).collect())
            }
            Request::FlushConntrack { zone } => {
                let n = self.ct().flush(*zone);
                Ok(format!("{n} connections flushed\n"))
            }
            Request::Show {} => Ok(self.show()),
            Request::Stats {} => Ok(self.stats_text()),
            Request::Trace { packet } => {
                let key = kairo_flow::parse_key(packet).map_err(|e| format!("packet `{packet}`: {e}"))?;
                let c = self.ctl.lock();
                let p = c.pipeline();
                // Every pass its recirculations lead to, as `kairo trace`.
                let passes = kairo_xlate::recirc::follow(&p, &key);
                Ok(kairo_xlate::trace::trace_passes_text(&p, &passes))
            }
            Request::Help {} => Ok(help()),
        }
    }

    fn dump_flows(&self, table: Option<u8>) -> String {
        let counts = self.rule_counts();
        let c = self.ctl.lock();
        let p = c.pipeline();
        let mut out = String::new();
        for (t, tb) in p.tables() {
            if table.is_some_and(|x| x != t) {
                continue;
            }
            let mut rules: Vec<_> = tb.cls.iter().collect();
            rules.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
            for r in rules {
                let (np, nb) = counts.get(&(t, r.id)).copied().unwrap_or_default();
                let rule = &r.payload;
                let _ = write!(out, " cookie={:#x}, table={t}, n_packets={np}, n_bytes={nb}, ", rule.cookie);
                if rule.idle_timeout != 0 {
                    let _ = write!(out, "idle_timeout={}, ", rule.idle_timeout);
                }
                if rule.hard_timeout != 0 {
                    let _ = write!(out, "hard_timeout={}, ", rule.hard_timeout);
                }
                let m = rule.m.to_string();
                if rule.flags & kairo_ofproto::flags::SEND_FLOW_REM != 0 {
                    out.push_str("send_flow_rem ");
                }
                let _ = write!(out, "priority={}", rule.priority);
                if !m.is_empty() {
                    let _ = write!(out, ",{m}");
                }
                let _ = writeln!(out, " actions={}", rule.inst);
            }
        }
        out
    }

    /// The switch's port named by number or interface name.
    fn port_number(&self, which: &str) -> Result<u32, String> {
        self.ports()
            .iter()
            .find(|p| p.name == which || which.parse::<u32>().is_ok_and(|n| n == p.ofport))
            .map(|p| p.ofport)
            .ok_or_else(|| format!("no port `{which}` (ports are named by number or name)"))
    }

    /// NORMAL's learned MACs, as `ovs-appctl fdb/show` lists them.
    fn fdb_show(&self) -> String {
        let c = self.ctl.lock();
        let mut out = String::from(" port  VLAN  MAC                Age\n");
        let p = c.pipeline();
        for e in p.macs().entries() {
            let mac = (0..6).rev().map(|i| format!("{:02x}", (e.mac >> (8 * i)) & 0xff)).collect::<Vec<_>>().join(":");
            let _ = writeln!(out, "{:>5}  {:>4}  {mac}  {:>3}", e.port, e.vlan, c.clock.saturating_sub(e.used));
        }
        out
    }

    fn dump_groups(&self) -> String {
        let c = self.ctl.lock();
        let p = c.pipeline();
        p.groups().map(|g| format!(" {g}\n")).collect()
    }

    fn dump_megaflows(&self) -> String {
        let now = self.now_ms();
        // Under each datapath's lock only a reference per megaflow is
        // taken; the text is made after, so a large cache's dump does not
        // hold up forwarding for its formatting.
        let mut held = Vec::new();
        self.each_datapath(|dp| held.extend(dp.megaflows().filter(|m| !m.is_dead()).cloned()));
        let mut lines: Vec<String> = held
            .iter()
            .map(|m| {
                format!(
                    "{}, packets:{}, bytes:{}, used:{:.3}s, actions:{}",
                    kairo_flow::format_megaflow(&m.key(), &m.mask),
                    m.packets(),
                    m.bytes(),
                    now.saturating_sub(m.last_used()) as f64 / 1000.0,
                    kairo_xlate::format_actions(&m.actions())
                )
            })
            .collect();
        drop(held);
        lines.sort();
        lines.into_iter().map(|l| l + "\n").collect()
    }

    fn show(&self) -> String {
        let (rules, groups, version, engine, vlans) = {
            let c = self.ctl.lock();
            let pl = c.pipeline();
            let vlans: std::collections::BTreeMap<u32, String> = self
                .ports()
                .iter()
                .filter_map(|p| pl.port_settings(p.ofport).map(|s| (p.ofport, s.to_string())))
                .collect();
            (pl.n_rules(), pl.groups().count(), c.version(), c.engine.name(), vlans)
        };
        let mut out =
            format!("kairo switch: {rules} rules, {groups} groups, rule-table version {version}, engine {engine}\n");
        let g = PortCounters::get;
        for p in &self.ports() {
            let c = &p.counters;
            let vlan = vlans.get(&p.ofport).map(|s| format!(", {s}")).unwrap_or_default();
            let mode = p.mode.as_ref().map(|m| format!(" ({m})")).unwrap_or_default();
            let _ = writeln!(
                out,
                " {}({}): {}{mode}{vlan}\n     rx pkts={}, bytes={}, drop={}\n     tx pkts={}, bytes={}, drop={}",
                p.ofport,
                p.name,
                p.kind,
                g(&c.rx_packets),
                g(&c.rx_bytes),
                g(&c.rx_dropped),
                g(&c.tx_packets),
                g(&c.tx_bytes),
                g(&c.tx_dropped)
            );
        }
        out
    }

    fn stats_text(&self) -> String {
        let (s, n, limit) = self.dp_totals();
        let (ct, frag) = {
            let ct = self.ct();
            (ct.stats(), ct.frag_stats())
        };
        let s: DpStats = s;
        let pct = |x: u64| if s.packets == 0 { 0.0 } else { 100.0 * x as f64 / s.packets as f64 };
        let mut out = String::new();
        let _ = writeln!(out, "packets: {}", s.packets);
        let _ = writeln!(out, "  emc hits:      {} ({:.1}%)", s.emc_hits, pct(s.emc_hits));
        let _ = writeln!(out, "  megaflow hits: {} ({:.1}%)", s.megaflow_hits, pct(s.megaflow_hits));
        let _ = writeln!(out, "  upcalls:       {} ({:.1}%)", s.misses, pct(s.misses));
        let late = self.ctl.published().late();
        let _ = writeln!(
            out,
            "  upcalls while an update ran: {} (megaflows registered after it {}, not kept {}, lessons dropped {}); \
             parked while the tables changed: {} ({} dropped)",
            late.translated, late.offered, late.refused, late.lessons_dropped, s.parked, s.parked_dropped
        );
        let _ = writeln!(
            out,
            "  to controller: {}, to no such port: {}, dropped for a bad offload header: {}",
            self.controller.load(Ordering::Relaxed),
            self.unroutable.load(Ordering::Relaxed),
            s.bad_offload
        );
        let _ = writeln!(
            out,
            "megaflows: {n} (limit {limit}), installed {}, not installed {}, expired idle {}, subtables/lookup {:.2}",
            s.installed,
            s.not_installed,
            s.evicted_idle,
            s.avg_subtables_per_lookup()
        );
        let _ = writeln!(
            out,
            "conntrack: {} connections, {} packets tracked, {} committed, {} invalid, {} expired, {} flushed",
            ct.conns, ct.packets, ct.committed, ct.invalid, ct.expired, ct.flushed
        );
        let _ = writeln!(
            out,
            "  not committed: {} at the connection limit, {} at a zone's limit, {} without a NAT tuple left",
            ct.full, ct.zone_full, ct.nat_exhausted
        );
        let _ = writeln!(
            out,
            "  fragments: {} held, {} datagrams reassembled, {} refused, {} datagrams timed out",
            frag.held, frag.reassembled, frag.refused, frag.timed_out
        );
        let log = lock(&self.updates);
        let mut us: Vec<f64> = log.recent.iter().map(|r| r.ttu.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let _ = write!(out, "updates: {} (last {} below)", log.total, us.len());
        if us.is_empty() {
            out.push('\n');
            return out;
        }
        let q = |p: f64| us[((us.len() - 1) as f64 * p).round() as usize];
        let _ = writeln!(out, ", time-to-update median {:.1} us, p99 {:.1} us, max {:.1} us", q(0.5), q(0.99), q(1.0));
        let affected: usize = log.recent.iter().map(|r| r.examined).sum();
        let _ = writeln!(out, "  entries re-translated: {affected}");
        let bounds = [(0.0, 10.0, "<10us"), (10.0, 100.0, "10-100us"), (100.0, 1e3, "0.1-1ms"), (1e3, 1e4, "1-10ms")];
        for (lo, hi, label) in bounds.iter().copied().chain([(1e4, f64::INFINITY, ">=10ms")]) {
            let k = us.iter().filter(|&&v| v >= lo && v < hi).count();
            let bar = "#".repeat((40 * k).div_ceil(us.len()));
            let _ = writeln!(out, "  {label:>9} {k:>6} {bar}");
        }
        out
    }
}

/// A client connection to a switch's control socket.
pub struct Client {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let w = UnixStream::connect(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot connect to {}: {e}", path.display())))?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Client { w, r })
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, req: &Request) -> std::io::Result<Reply> {
        let mut text = serde_json::to_string(req)?;
        text.push('\n');
        self.w.write_all(text.as_bytes())?;
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the switch closed the connection"));
        }
        serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

//! What each OpenFlow request does to the switch and what it answers.
//!
//! Invariants: a request that changes state goes through
//! [`Switch::apply`], the one implementation of every flow and group change
//! (the control socket's commands use it too), and is answered only after it
//! and its cache maintenance are done; a rejected request changes nothing
//! and is answered with OpenFlow's error for it; statistics replies are split
//! into messages under 64 KiB, every one but the last flagged REPLY_MORE.

use kairo_maintain::flowmod::{select_rules, uses_group, FlowMod as KFlowMod, ModError};
use kairo_ofp::map;
use kairo_ofp::message::{ofpfc, ofpff, ofpgc, Features, FlowMod, GroupMod, PortDesc, Role, OFPG_ALL, OFPG_ANY};
use kairo_ofp::multipart::{
    Aggregate, Desc, FlowStats, FlowStatsRequest, GroupDesc, GroupFeatures, GroupStats, MpReply, MpRequest, PortStats,
    TableFeatures, TableStats, MORE,
};
use kairo_ofp::{port, Error, ErrorCode, Message, Version};
use kairo_ofproto::{FlowSpec, Rule};
use kairo_xlate::PipelineError;

use super::conn::{Session, Shared, ROLE_EQUAL, ROLE_MASTER, ROLE_NOCHANGE, ROLE_SLAVE};
use crate::Switch;

/// OFPTT_ALL: every table.
const ALL_TABLES: u8 = 0xff;
/// Tables kairo reports (0..=253, as Open vSwitch).
const N_TABLES: u8 = 254;
/// Bytes of entries per multipart reply message (under 64 KiB with headers).
const REPLY_BUDGET: usize = 60_000;

/// Handles one request; the replies to send, in order (none for most changes).
pub fn handle(sw: &Switch, shared: &Shared, s: &mut Session, xid: u32, m: &Message) -> Result<Vec<Message>, Error> {
    let v = s.version;
    Ok(match m {
        Message::Hello { .. } => vec![],
        Message::EchoRequest(d) => vec![Message::EchoReply(d.clone())],
        Message::EchoReply(_) | Message::Error { .. } => vec![],
        Message::FeaturesRequest => vec![Message::FeaturesReply(Features {
            datapath_id: shared.dpid,
            n_buffers: 0,
            n_tables: N_TABLES,
            auxiliary_id: 0,
            // FLOW_STATS | TABLE_STATS | PORT_STATS | GROUP_STATS
            capabilities: 0x1 | 0x2 | 0x4 | 0x8,
        })],
        Message::GetConfigRequest => vec![Message::GetConfigReply(s.config)],
        Message::SetConfig(c) => {
            s.config = *c;
            vec![]
        }
        Message::PacketOut(po) => {
            writer(s)?;
            packet_out(sw, po)?;
            vec![]
        }
        Message::BarrierRequest => vec![Message::BarrierReply],
        Message::FlowMod(fm) => {
            writer(s)?;
            apply(sw, &flow_mod_change(sw, fm)?)?;
            vec![]
        }
        Message::GroupMod(gm) => {
            writer(s)?;
            if let Some(change) = group_mod_change(sw, gm)? {
                apply(sw, &change)?;
            }
            vec![]
        }
        Message::BundleControl(c) => {
            writer(s)?;
            vec![super::bundle::control(sw, s, c)?]
        }
        Message::BundleAdd(a) => {
            writer(s)?;
            super::bundle::add(sw, s, xid, a)?;
            vec![]
        }
        Message::MultipartRequest { body, .. } => multipart(sw, v, body)?,
        Message::RoleRequest(r) => {
            let reply = role(shared, s, r)?;
            s.outbox.configure(s.role, &s.async_config);
            vec![Message::RoleReply(reply)]
        }
        Message::GetAsyncRequest => vec![Message::GetAsyncReply(s.async_config)],
        Message::SetAsync(a) => {
            s.async_config = *a;
            s.outbox.configure(s.role, &s.async_config);
            vec![]
        }
        Message::SetPacketInFormat(f) => {
            use kairo_ofp::message::nxpif;
            if !matches!(*f, nxpif::STANDARD | nxpif::NXT_PACKET_IN2) {
                return Err(Error::new(
                    ErrorCode::REQUEST_EPERM,
                    format!(
                        "packet-in format {f}: kairo sends OpenFlow's PACKET_IN (0) or NXT_PACKET_IN2 (2), not \
                         NXT_PACKET_IN (1)"
                    ),
                ));
            }
            s.outbox.set_packet_in_format(*f);
            vec![]
        }
        Message::SetControllerId(id) => {
            s.outbox.set_controller_id(*id);
            vec![]
        }
        Message::MeterMod(mm) => {
            writer(s)?;
            super::meters::meter_mod(sw, mm)?;
            vec![]
        }
        Message::PortMod(pm) => {
            writer(s)?;
            let desc = super::ports::port_mod(sw, pm)?;
            super::ports::announce(sw, desc);
            vec![]
        }
        other => {
            return Err(Error::new(
                ErrorCode::BAD_TYPE,
                format!("message type {} is not a request to a switch", other.ty()),
            ))
        }
    })
}

/// A PACKET_OUT: its actions checked here, run by the forwarding thread
/// (output:TABLE is a lookup from table 0, as a resubmit).
fn packet_out(sw: &Switch, po: &kairo_ofp::message::PacketOut) -> Result<(), Error> {
    if po.buffer_id != kairo_ofp::message::NO_BUFFER {
        return Err(Error::new(
            ErrorCode::BUFFER_UNKNOWN,
            format!("buffer {:#x}: kairo buffers no packets", po.buffer_id),
        ));
    }
    let in_port = port::from_wire(po.in_port)?;
    let mut actions = Vec::with_capacity(po.actions.len());
    for a in &po.actions {
        actions.push(match a {
            kairo_ofp::action::Act::Output { port: port::OFPP_TABLE, .. } => {
                kairo_ofproto::Action::Resubmit { port: None, table: Some(0) }
            }
            other => map::action_from_wire(other)?,
        });
    }
    if po.data.len() < 14 {
        return Err(Error::new(
            ErrorCode::BAD_PACKET,
            format!("a {}-byte packet is not an Ethernet frame", po.data.len()),
        ));
    }
    sw.packet_out(crate::PacketOut { in_port, actions, data: po.data.clone() });
    Ok(())
}

/// Slaves may not change the switch.
fn writer(s: &Session) -> Result<(), Error> {
    if s.role == ROLE_SLAVE {
        return Err(Error::new(ErrorCode::IS_SLAVE, "this connection is a slave: it may not change the switch"));
    }
    Ok(())
}

fn role(shared: &Shared, s: &mut Session, r: &Role) -> Result<Role, Error> {
    let mut generation = crate::lock(&shared.generation);
    match r.role {
        ROLE_NOCHANGE => {}
        ROLE_EQUAL => {
            s.role = ROLE_EQUAL;
            let mut master = crate::lock(&shared.master);
            if *master == Some(s.id) {
                *master = None;
            }
        }
        ROLE_MASTER | ROLE_SLAVE => {
            // Generation ids compare as a wrapping 64-bit sequence.
            if let Some(g) = *generation {
                if (r.generation_id.wrapping_sub(g) as i64) < 0 {
                    return Err(Error::new(
                        ErrorCode::ROLE_STALE,
                        format!("generation id {} is older than {g}", r.generation_id),
                    ));
                }
            }
            *generation = Some(r.generation_id);
            let mut master = crate::lock(&shared.master);
            if r.role == ROLE_MASTER {
                *master = Some(s.id);
            } else if *master == Some(s.id) {
                *master = None;
            }
            s.role = r.role;
        }
        other => return Err(Error::new(ErrorCode::BAD_ROLE, format!("role {other}"))),
    }
    Ok(Role { role: s.role, generation_id: generation.unwrap_or(0) })
}

/// A kairo change error as OpenFlow's error.
fn mod_error(e: ModError) -> Error {
    let code = match &e {
        ModError::Pipeline(PipelineError::GotoBackward { .. }) => ErrorCode::INST_BAD_TABLE_ID,
        ModError::Pipeline(PipelineError::MissingGroup { .. }) => ErrorCode::BAD_OUT_GROUP,
        ModError::Pipeline(PipelineError::NotInActionSet { .. }) => ErrorCode::BAD_ACTION_TYPE,
        ModError::Pipeline(PipelineError::GroupLoop { .. }) => ErrorCode::GROUP_LOOP,
        ModError::Pipeline(PipelineError::GroupInUse { .. }) => ErrorCode::CHAINED_GROUP,
        ModError::Pipeline(PipelineError::Inconsistent { .. }) => ErrorCode::MATCH_INCONSISTENT,
        ModError::GroupExists(_) => ErrorCode::GROUP_EXISTS,
        ModError::NoSuchGroup(_) => ErrorCode::UNKNOWN_GROUP,
        _ => ErrorCode::FLOW_MOD_UNKNOWN,
    };
    Error::new(code, e.to_string())
}

pub fn apply(sw: &Switch, fm: &KFlowMod) -> Result<(), Error> {
    sw.apply(fm).map(|_| ()).map_err(mod_error)
}

/// The rule selection of a modify/delete/stats request, as a kairo spec.
fn spec(
    table_id: u8,
    priority: Option<u16>,
    cookie: u64,
    cookie_mask: u64,
    fields: &[kairo_ofp::oxm::Oxm],
    out_port: u32,
    out_group: u32,
) -> Result<FlowSpec, Error> {
    Ok(FlowSpec {
        table: (table_id != ALL_TABLES).then_some(table_id),
        priority,
        cookie,
        cookie_mask: (cookie_mask != 0).then_some(cookie_mask),
        m: map::match_from_wire(fields)?,
        out_port: match out_port {
            port::OFPP_ANY => None,
            p => Some(port::from_wire(p)?),
        },
        out_group: (out_group != OFPG_ANY).then_some(out_group),
        ..FlowSpec::default()
    })
}

/// A FLOW_MOD as the kairo change it asks for (checked against the
/// pipeline for CHECK_OVERLAP).
pub fn flow_mod_change(sw: &Switch, fm: &FlowMod) -> Result<KFlowMod, Error> {
    let instructions = |m: &kairo_flow::Match| -> Result<kairo_ofproto::Instructions, Error> {
        let mut inst = map::instructions_from_wire(&fm.instructions)?;
        let has_vlan = kairo_ofproto::action::match_has_vlan(m);
        kairo_ofproto::action::normalize_vlan(&mut inst.apply, has_vlan);
        kairo_ofproto::action::normalize_vlan(&mut inst.write, has_vlan);
        Ok(inst)
    };
    match fm.command {
        ofpfc::ADD => {
            if fm.table_id >= N_TABLES {
                return Err(Error::new(
                    ErrorCode::FLOW_BAD_TABLE_ID,
                    format!("table {} (tables are 0 to 253)", fm.table_id),
                ));
            }
            let m = map::match_from_wire(&fm.fields)?;
            let inst = instructions(&m)?;
            super::meters::check(sw, &inst)?;
            if fm.flags & ofpff::CHECK_OVERLAP != 0 {
                let c = sw.ctl.lock();
                let p = c.pipeline();
                if let Some(t) = p.table(fm.table_id) {
                    if t.cls.iter().any(|r| r.priority == fm.priority && r.payload.m != m && r.payload.m.overlaps(&m)) {
                        return Err(Error::new(
                            ErrorCode::OVERLAP,
                            format!("a rule of priority {} in table {} overlaps", fm.priority, fm.table_id),
                        ));
                    }
                }
            }
            Ok(KFlowMod::Add(Rule {
                table: fm.table_id,
                priority: fm.priority,
                cookie: fm.cookie,
                m,
                inst,
                idle_timeout: fm.idle_timeout,
                hard_timeout: fm.hard_timeout,
                flags: fm.flags & kairo_ofproto::flags::KEPT,
            }))
        }
        // OpenFlow 1.1+: modifying nothing adds nothing (kairo's modify never adds).
        ofpfc::MODIFY | ofpfc::MODIFY_STRICT => {
            let strict = fm.command == ofpfc::MODIFY_STRICT;
            let priority = strict.then_some(fm.priority);
            let mut sp = spec(fm.table_id, priority, fm.cookie, fm.cookie_mask, &fm.fields, port::OFPP_ANY, OFPG_ANY)?;
            let inst = instructions(&sp.m)?;
            super::meters::check(sw, &inst)?;
            sp.instructions = Some(inst);
            sp.flags = fm.flags;
            Ok(KFlowMod::Modify { strict, spec: sp })
        }
        ofpfc::DELETE | ofpfc::DELETE_STRICT => {
            let strict = fm.command == ofpfc::DELETE_STRICT;
            let priority = strict.then_some(fm.priority);
            let sp = spec(fm.table_id, priority, fm.cookie, fm.cookie_mask, &fm.fields, fm.out_port, fm.out_group)?;
            Ok(KFlowMod::Delete { strict, spec: sp })
        }
        other => Err(Error::new(ErrorCode::BAD_COMMAND, format!("flow-mod command {other}"))),
    }
}

/// A GROUP_MOD as the kairo change it asks for; `None` for deleting a
/// group that does not exist, which OpenFlow makes a no-op.
pub fn group_mod_change(sw: &Switch, gm: &GroupMod) -> Result<Option<KFlowMod>, Error> {
    match gm.command {
        ofpgc::ADD => Ok(Some(KFlowMod::AddGroup(map::group_from_wire(gm.ty, gm.group_id, &gm.buckets)?))),
        ofpgc::MODIFY => Ok(Some(KFlowMod::ModGroup(map::group_from_wire(gm.ty, gm.group_id, &gm.buckets)?))),
        ofpgc::DELETE => {
            let which = (gm.group_id != OFPG_ALL).then_some(gm.group_id);
            if let Some(g) = which {
                if sw.ctl.lock().pipeline().group(g).is_none() {
                    return Ok(None);
                }
            }
            Ok(Some(KFlowMod::DelGroup(which)))
        }
        other => Err(Error::new(ErrorCode::BAD_GROUP_COMMAND, format!("group-mod command {other}"))),
    }
}

/// Splits entries into replies of at most [`REPLY_BUDGET`] bytes each.
fn split<T>(items: Vec<T>, size: impl Fn(&T) -> usize, wrap: impl Fn(Vec<T>) -> MpReply) -> Vec<Message> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut used = 0;
    for it in items {
        let n = size(&it);
        if used + n > REPLY_BUDGET && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += n;
        cur.push(it);
    }
    out.push(cur);
    let last = out.len() - 1;
    out.into_iter()
        .enumerate()
        .map(|(i, body)| Message::MultipartReply { flags: if i < last { MORE } else { 0 }, body: wrap(body) })
        .collect()
}

fn selected(
    sw: &Switch,
    r: &FlowStatsRequest,
) -> Result<Vec<(u8, kairo_classifier::RuleId, std::sync::Arc<Rule>)>, Error> {
    let sp = spec(r.table_id, None, r.cookie, r.cookie_mask, &r.fields, r.out_port, r.out_group)?;
    let c = sw.ctl.lock();
    let p = c.pipeline();
    let mut out = Vec::new();
    for (t, id) in select_rules(&p, &sp, false) {
        if let Some(rule) = p.table(t).and_then(|tb| tb.cls.get(id)) {
            out.push((t, id, rule.payload.clone()));
        }
    }
    Ok(out)
}

fn multipart(sw: &Switch, v: Version, req: &MpRequest) -> Result<Vec<Message>, Error> {
    Ok(match req {
        MpRequest::Desc => vec![Message::MultipartReply {
            flags: 0,
            body: MpReply::Desc(Desc {
                mfr: "kairo".into(),
                hw: "kairo userspace switch".into(),
                sw: env!("CARGO_PKG_VERSION").into(),
                serial: "None".into(),
                dp: "None".into(),
            }),
        }],
        MpRequest::Flow(r) => {
            let rules = selected(sw, r)?;
            let counts = sw.rule_counts();
            let now = sw.now_ms();
            let mut stats = Vec::with_capacity(rules.len());
            for (t, id, rule) in rules {
                let (packet_count, byte_count) = counts.get(&(t, id)).copied().unwrap_or_default();
                let lived = now.saturating_sub(crate::lock(&sw.lives).installed(t, id));
                stats.push(FlowStats {
                    table_id: t,
                    duration_sec: (lived / 1000) as u32,
                    duration_nsec: ((lived % 1000) * 1_000_000) as u32,
                    priority: rule.priority,
                    idle_timeout: rule.idle_timeout,
                    hard_timeout: rule.hard_timeout,
                    flags: rule.flags,
                    importance: 0,
                    cookie: rule.cookie,
                    packet_count,
                    byte_count,
                    fields: map::match_to_wire(&rule.m, v)?,
                    instructions: map::instructions_to_wire(&rule.inst, v, &rule.m)?,
                });
            }
            let size = |f: &FlowStats| {
                let mut w = kairo_ofp::buf::Writer::default();
                kairo_ofp::multipart::encode_flow_stats(&mut w, f, v);
                w.len()
            };
            split(stats, size, MpReply::Flow)
        }
        MpRequest::Aggregate(r) => {
            let rules = selected(sw, r)?;
            let counts = sw.rule_counts();
            let mut a = Aggregate { packet_count: 0, byte_count: 0, flow_count: 0 };
            for (t, id, _) in rules {
                let (p, b) = counts.get(&(t, id)).copied().unwrap_or_default();
                a.packet_count += p;
                a.byte_count += b;
                a.flow_count += 1;
            }
            vec![Message::MultipartReply { flags: 0, body: MpReply::Aggregate(a) }]
        }
        MpRequest::Table => {
            let c = sw.ctl.lock();
            let p = c.pipeline();
            let stats: Vec<TableStats> = (0..N_TABLES)
                .map(|t| TableStats {
                    table_id: t,
                    active_count: p.table(t).map_or(0, |tb| tb.cls.len() as u32),
                    lookup_count: 0,
                    matched_count: 0,
                })
                .collect();
            drop(p);
            drop(c);
            split(stats, |_| 24, MpReply::Table)
        }
        MpRequest::PortDesc(which) => {
            let ports: Vec<PortDesc> = sw
                .ports()
                .iter()
                .filter(|p| *which == port::OFPP_ANY || port::to_wire(p.ofport) == *which)
                .map(super::ports::port_desc)
                .collect();
            split(ports, |_| 72, MpReply::PortDesc)
        }
        MpRequest::PortStats(which) => {
            let stats: Vec<PortStats> = sw
                .ports()
                .iter()
                .filter(|p| *which == port::OFPP_ANY || port::to_wire(p.ofport) == *which)
                .map(|p| {
                    let c = &p.counters;
                    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                    PortStats {
                        port_no: port::to_wire(p.ofport),
                        rx_packets: get(&c.rx_packets),
                        tx_packets: get(&c.tx_packets),
                        rx_bytes: get(&c.rx_bytes),
                        tx_bytes: get(&c.tx_bytes),
                        rx_dropped: get(&c.rx_dropped),
                        tx_dropped: get(&c.tx_dropped),
                        duration_sec: sw.start.elapsed().as_secs() as u32,
                        duration_nsec: sw.start.elapsed().subsec_nanos(),
                        ..PortStats::default()
                    }
                })
                .collect();
            split(stats, |_| 120, MpReply::PortStats)
        }
        MpRequest::GroupDesc(which) => {
            let c = sw.ctl.lock();
            let p = c.pipeline();
            let mut descs = Vec::new();
            for g in p.groups() {
                if *which != OFPG_ALL && g.id != *which {
                    continue;
                }
                descs.push(GroupDesc {
                    ty: map::group_type_to_wire(g.ty),
                    group_id: g.id,
                    buckets: map::buckets_to_wire(g, v)?,
                });
            }
            drop(p);
            drop(c);
            let size = |g: &GroupDesc| {
                let mut w = kairo_ofp::buf::Writer::default();
                MpReply::GroupDesc(vec![g.clone()]).encode(&mut w, v, 0);
                w.len()
            };
            split(descs, size, MpReply::GroupDesc)
        }
        MpRequest::Group(which) => {
            let c = sw.ctl.lock();
            let p = c.pipeline();
            let mut stats = Vec::new();
            for g in p.groups() {
                if *which != OFPG_ALL && g.id != *which {
                    continue;
                }
                let refs =
                    p.tables().flat_map(|(_, tb)| tb.cls.iter()).filter(|r| uses_group(&r.payload, g.id)).count();
                stats.push(GroupStats {
                    group_id: g.id,
                    ref_count: refs as u32,
                    packet_count: 0,
                    byte_count: 0,
                    duration_sec: 0,
                    duration_nsec: 0,
                    buckets: vec![(0, 0); g.buckets.len()],
                });
            }
            drop(p);
            drop(c);
            split(stats, |g| 40 + 16 * g.buckets.len(), MpReply::Group)
        }
        MpRequest::TableFeatures => {
            let fields = map::match_field_ids();
            // GOTO_TABLE, WRITE_METADATA, WRITE/APPLY/CLEAR_ACTIONS.
            let insts = [1, 2, 3, 4, 5];
            // OUTPUT, PUSH/POP_VLAN, GROUP, DEC_NW_TTL, SET_FIELD.
            let actions = [0, 17, 18, 22, 24, 25];
            let feats: Vec<TableFeatures> = (0..N_TABLES)
                .map(|t| {
                    let next: Vec<u8> = (t + 1..N_TABLES).collect();
                    TableFeatures {
                        table_id: t,
                        name: format!("table{t}"),
                        metadata_match: u64::MAX,
                        metadata_write: u64::MAX,
                        config: 0,
                        max_entries: 1_000_000,
                        properties: TableFeatures::properties(&insts, &next, &actions, &fields),
                    }
                })
                .collect();
            split(feats, |t| 64 + t.properties.len(), MpReply::TableFeatures)
        }
        MpRequest::Meter(id) => split(super::meters::stats(sw, *id), |s| 40 + 16 * s.bands.len(), MpReply::Meter),
        MpRequest::MeterConfig(id) => {
            split(super::meters::configs(sw, *id), |c| 8 + 16 * c.bands.len(), MpReply::MeterConfig)
        }
        MpRequest::MeterFeatures => vec![super::meters::features()],
        MpRequest::GroupFeatures => vec![Message::MultipartReply {
            flags: 0,
            body: MpReply::GroupFeatures(GroupFeatures {
                // all, select, indirect, fast failover
                types: 0xf,
                // SELECT_WEIGHT | SELECT_LIVENESS | CHAINING
                capabilities: 0x1 | 0x2 | 0x4,
                max_groups: [u32::MAX; 4],
                // OUTPUT, PUSH/POP_VLAN, GROUP, DEC_NW_TTL, SET_FIELD
                actions: [(1 << 0) | (1 << 17) | (1 << 18) | (1 << 22) | (1 << 24) | (1 << 25); 4],
            }),
        }],
    })
}

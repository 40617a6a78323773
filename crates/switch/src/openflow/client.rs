//! A small blocking OpenFlow client: kairo's changes as OpenFlow messages
//! ([`to_messages`]), and a connection that sends them and waits for the
//! barrier after them ([`Client`]). `kairo bench openflow` drives a switch
//! with it; it speaks to Open vSwitch as well.
//!
//! Invariant: [`to_messages`] is the inverse of the switch end's
//! [`flow_mod_change`](super::handle::flow_mod_change) and
//! [`group_mod_change`](super::handle::group_mod_change) for every change it
//! accepts; a change OpenFlow cannot carry in one message (a miss
//! behaviour) is an error naming it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use kairo_maintain::flowmod::FlowMod as KFlowMod;
use kairo_ofp::message::{ofpfc, ofpgc, FlowMod, GroupMod, NO_BUFFER, OFPG_ALL, OFPG_ANY, OFPG_BUCKET_ALL};
use kairo_ofp::{decode, encode, map, port, Error, ErrorCode, Message, Version};
use kairo_ofproto::FlowSpec;

use super::conn::Stream;
use super::Target;

fn flow_mod(command: u8, spec: &FlowSpec, strict: bool, v: Version) -> Result<FlowMod, Error> {
    let instructions = match &spec.instructions {
        Some(i) => map::instructions_to_wire(i, v, &spec.m)?,
        None => Vec::new(),
    };
    Ok(FlowMod {
        cookie: spec.cookie,
        cookie_mask: spec.cookie_mask.unwrap_or(0),
        table_id: spec.table.unwrap_or(if command == ofpfc::ADD { 0 } else { 0xff }),
        command,
        idle_timeout: spec.idle_timeout,
        hard_timeout: spec.hard_timeout,
        priority: spec.priority.unwrap_or(if strict || command == ofpfc::ADD { 32768 } else { 0 }),
        buffer_id: NO_BUFFER,
        out_port: spec.out_port.map_or(port::OFPP_ANY, port::to_wire),
        out_group: spec.out_group.unwrap_or(OFPG_ANY),
        flags: spec.flags,
        importance: 0,
        fields: map::match_to_wire(&spec.m, v)?,
        instructions,
    })
}

fn group_mod(command: u16, g: &kairo_ofproto::Group, v: Version) -> Result<GroupMod, Error> {
    if g.fields.is_some() {
        return Err(Error::new(ErrorCode::BAD_PROPERTY_TYPE, "a select group's hash fields need a group property"));
    }
    Ok(GroupMod {
        command,
        ty: map::group_type_to_wire(g.ty),
        group_id: g.id,
        command_bucket_id: OFPG_BUCKET_ALL,
        buckets: map::buckets_to_wire(g, v)?,
    })
}

/// A kairo change as the OpenFlow messages that make it (a bundle's
/// changes one after another).
pub fn to_messages(fm: &KFlowMod, v: Version) -> Result<Vec<Message>, Error> {
    Ok(match fm {
        KFlowMod::Add(r) => {
            let spec = FlowSpec {
                table: Some(r.table),
                priority: Some(r.priority),
                cookie: r.cookie,
                m: r.m,
                instructions: Some(r.inst.clone()),
                idle_timeout: r.idle_timeout,
                hard_timeout: r.hard_timeout,
                flags: r.flags,
                ..FlowSpec::default()
            };
            vec![Message::FlowMod(flow_mod(ofpfc::ADD, &spec, true, v)?)]
        }
        KFlowMod::Modify { strict, spec } => {
            let c = if *strict { ofpfc::MODIFY_STRICT } else { ofpfc::MODIFY };
            vec![Message::FlowMod(flow_mod(c, spec, *strict, v)?)]
        }
        KFlowMod::Delete { strict, spec } => {
            let c = if *strict { ofpfc::DELETE_STRICT } else { ofpfc::DELETE };
            vec![Message::FlowMod(flow_mod(c, spec, *strict, v)?)]
        }
        KFlowMod::AddGroup(g) => vec![Message::GroupMod(group_mod(ofpgc::ADD, g, v)?)],
        KFlowMod::AddGroups(gs) => {
            gs.iter().map(|g| group_mod(ofpgc::ADD, g, v).map(Message::GroupMod)).collect::<Result<_, _>>()?
        }
        KFlowMod::ModGroup(g) => vec![Message::GroupMod(group_mod(ofpgc::MODIFY, g, v)?)],
        KFlowMod::DelGroup(id) => vec![Message::GroupMod(GroupMod {
            command: ofpgc::DELETE,
            ty: 0,
            group_id: id.unwrap_or(OFPG_ALL),
            command_bucket_id: OFPG_BUCKET_ALL,
            buckets: Vec::new(),
        })],
        KFlowMod::Bundle(mods) => {
            let mut out = Vec::new();
            for m in mods {
                out.extend(to_messages(m, v)?);
            }
            out
        }
        KFlowMod::SetPorts(_) => {
            return Err(Error::new(ErrorCode::BAD_TYPE, "the switch's ports are added and removed with `kairo ctl`"))
        }
        KFlowMod::SetPortLive(port, _) => {
            return Err(Error::new(
                ErrorCode::BAD_TYPE,
                format!("port {port}'s liveness is the switch's link state (PORT_MOD's port_down sets it down)"),
            ))
        }
        KFlowMod::SetMiss(t, _) => {
            return Err(Error::new(
                ErrorCode::BAD_TYPE,
                format!("table {t}'s miss behaviour has no OpenFlow 1.3 message"),
            ))
        }
        KFlowMod::LearnFlows(learned) => learned
            .iter()
            .map(|l| {
                let spec = FlowSpec::exact(l.rule.table, l.rule.priority, l.rule.m);
                let spec = FlowSpec {
                    cookie: l.rule.cookie,
                    instructions: Some(l.rule.inst.clone()),
                    idle_timeout: l.rule.idle_timeout,
                    hard_timeout: l.rule.hard_timeout,
                    flags: l.rule.flags,
                    ..spec
                };
                flow_mod(ofpfc::MODIFY_STRICT, &spec, true, v).map(Message::FlowMod)
            })
            .collect::<Result<_, _>>()?,
        KFlowMod::CutTimeouts(_) => {
            return Err(Error::new(ErrorCode::BAD_TYPE, "timeouts that fin_timeout cut are the switch's own doing"))
        }
        KFlowMod::SetPortSettings(..) | KFlowMod::Learn { .. } | KFlowMod::ExpireMacs(_) | KFlowMod::FlushMacs(_) => {
            return Err(Error::new(
                ErrorCode::BAD_TYPE,
                "ports' VLAN settings and NORMAL's MAC table are the switch's own (`kairo ctl`), not OpenFlow's",
            ))
        }
    })
}

/// A blocking OpenFlow connection to a switch.
pub struct Client {
    s: Stream,
    pub version: Version,
    xid: u32,
}

impl Client {
    /// Connects to `unix:PATH` or `tcp:IP:PORT` and agrees on `v`.
    pub fn connect(target: &Target, v: Version) -> std::io::Result<Client> {
        let s = match target {
            Target::ActiveUnix(p) | Target::PassiveUnix(p) => Stream::Unix(UnixStream::connect(p)?),
            Target::ActiveTcp(a) | Target::PassiveTcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut c = Client { s, version: v, xid: 0 };
        c.send(&Message::Hello { bitmap: Some(Version::bitmap(&[v])) })?;
        loop {
            match c.recv()? {
                Message::Hello { .. } => return Ok(c),
                Message::Error { code, .. } => return Err(std::io::Error::other(format!("hello refused: {code}"))),
                _ => {}
            }
        }
    }

    /// Sends a message; its xid.
    pub fn send(&mut self, m: &Message) -> std::io::Result<u32> {
        self.xid = self.xid.wrapping_add(1);
        let b = encode(self.version, self.xid, m).map_err(std::io::Error::other)?;
        self.s.write_all(&b)?;
        Ok(self.xid)
    }

    /// The next message.
    pub fn recv(&mut self) -> std::io::Result<Message> {
        let mut h = [0u8; 8];
        self.s.read_exact(&mut h)?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let mut b = h.to_vec();
        b.resize(len.max(8), 0);
        self.s.read_exact(&mut b[8..])?;
        decode(&b).map(|(_, m)| m).map_err(std::io::Error::other)
    }

    /// Sends the messages and a barrier; waits for the barrier's reply. An
    /// error the switch sent before it is returned as an error.
    pub fn call(&mut self, msgs: &[Message]) -> std::io::Result<()> {
        for m in msgs {
            self.send(m)?;
        }
        self.send(&Message::BarrierRequest)?;
        let mut err = None;
        loop {
            match self.recv()? {
                Message::BarrierReply => break,
                Message::Error { code, .. } => err = Some(code),
                Message::EchoRequest(d) => {
                    self.send(&Message::EchoReply(d))?;
                }
                _ => {}
            }
        }
        match err {
            Some(code) => Err(std::io::Error::other(format!("the switch answered {code}"))),
            None => Ok(()),
        }
    }
}

//! PACKET_IN and PACKET_OUT over a real OpenFlow connection to an
//! in-process switch with in-memory ports: a table-miss rule sends packets
//! to the controller, a controller action names its rule, packet-outs leave
//! by a port or through the pipeline (output:TABLE), and a connection that
//! asked for no packet-ins gets none.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::{recv_n, start, udp_key};
use kairo_maintain::EngineKind;
use kairo_ofp::action::Act;
use kairo_ofp::message::{ofpfc, AsyncConfig, FlowMod, PacketOut, NO_BUFFER, OFPG_ANY};
use kairo_ofp::{decode, encode, port, Message, Version};
use kairo_switch::openflow::{serve, OfLimits, Target};

struct Client {
    s: UnixStream,
    v: Version,
    xid: u32,
}

impl Client {
    fn connect(path: &std::path::Path, v: Version) -> Client {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client { s, v, xid: 1 };
        c.send(&Message::Hello { bitmap: Some(Version::bitmap(&[v])) });
        assert!(matches!(c.recv(), Message::Hello { .. }));
        c
    }

    fn send(&mut self, m: &Message) -> u32 {
        self.xid += 1;
        let b = encode(self.v, self.xid, m).unwrap();
        self.s.write_all(&b).unwrap();
        self.xid
    }

    fn recv(&mut self) -> Message {
        let mut h = [0u8; 8];
        self.s.read_exact(&mut h).expect("a message");
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let mut b = h.to_vec();
        b.resize(len, 0);
        self.s.read_exact(&mut b[8..]).unwrap();
        decode(&b).expect("decodes").1
    }

    /// Sends and waits for the barrier after it; returns what came before the barrier reply.
    fn call(&mut self, m: &Message) -> Vec<Message> {
        self.send(m);
        self.send(&Message::BarrierRequest);
        let mut out = Vec::new();
        loop {
            match self.recv() {
                Message::BarrierReply => return out,
                other => out.push(other),
            }
        }
    }

    fn add_flow(&mut self, text: &str) {
        let got = self.call(&Message::FlowMod(flow_mod(text, self.v, ofpfc::ADD, 0)));
        assert!(got.is_empty(), "{text}: {got:?}");
    }
}

/// The FLOW_MOD `command` for the rule written as `text` (its table,
/// priority, cookie, timeouts, flags and `extra_flags`).
fn flow_mod(text: &str, v: Version, command: u8, extra_flags: u16) -> FlowMod {
    let rule = kairo_ofproto::parse_flow(text, Some(true)).unwrap().into_rule().unwrap();
    FlowMod {
        cookie: rule.cookie,
        cookie_mask: 0,
        table_id: rule.table,
        command,
        idle_timeout: rule.idle_timeout,
        hard_timeout: rule.hard_timeout,
        priority: rule.priority,
        buffer_id: NO_BUFFER,
        out_port: port::OFPP_ANY,
        out_group: OFPG_ANY,
        flags: rule.flags | extra_flags,
        importance: 0,
        fields: kairo_ofp::map::match_to_wire(&rule.m, v).unwrap(),
        instructions: kairo_ofp::map::instructions_to_wire(&rule.inst, v, &rule.m).unwrap(),
    }
}

/// An OpenFlow listener of the running switch on a Unix socket in a fresh
/// directory (kept while the directory lives).
fn listen(r: &common::Running) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("of.sock");
    serve(r.sw.clone(), &Target::PassiveUnix(path.clone()), Arc::new(AtomicBool::new(false)), OfLimits::default())
        .unwrap();
    (dir, path)
}

fn frame(in_port: u32, tp_dst: u16) -> Vec<u8> {
    kairo_wire::emit::frame(&udp_key(in_port, 0x0200_0000_0001, 1000, tp_dst), b"payload")
}

#[test]
fn packet_in_and_packet_out_over_openflow() {
    for v in Version::ALL {
        let r = start("", 3, EngineKind::Incremental);
        let (_dir, path) = listen(&r);
        let mut c = Client::connect(&path, v);
        // A second controller that wants no packet-ins.
        let mut quiet = Client::connect(&path, v);
        let none = AsyncConfig { packet_in: [0, 0], port_status: [0, 0], flow_removed: [0, 0] };
        if v == Version::V1_3 {
            assert!(quiet.call(&Message::SetAsync(none)).is_empty());
        }
        c.add_flow("priority=0,actions=CONTROLLER:65535");
        c.add_flow("table=0,priority=10,cookie=0x77,udp,tp_dst=99,actions=goto_table:4");
        c.add_flow("table=4,cookie=0x78,actions=CONTROLLER:20");
        // A table miss reaches the controller whole, with reason no-match.
        let f = frame(1, 53);
        r.peers[0].inject.send(f.clone()).unwrap();
        let Message::PacketIn(p) = c.recv() else { panic!("expected a packet-in") };
        assert_eq!((p.reason, p.table_id, p.cookie, p.total_len as usize), (0, 0, 0, f.len()));
        assert_eq!(p.data, f);
        assert_eq!(p.fields.len(), 1);
        assert_eq!(p.fields[0].value, 1, "in_port");
        // A controller action names its rule and truncates to its max_len.
        let f = frame(2, 99);
        r.peers[1].inject.send(f.clone()).unwrap();
        let Message::PacketIn(p) = c.recv() else { panic!("expected a packet-in") };
        assert_eq!((p.reason, p.table_id, p.cookie, p.total_len as usize), (1, 4, 0x78, f.len()));
        assert_eq!(p.data, f[..20].to_vec());
        assert_eq!(p.fields[0].value, 2);
        // Packet-out to a port.
        let f = frame(1, 7);
        let po = PacketOut {
            buffer_id: NO_BUFFER,
            in_port: port::OFPP_CONTROLLER,
            actions: vec![Act::Output { port: 3, max_len: 0 }],
            data: f.clone(),
        };
        assert!(c.call(&Message::PacketOut(po)).is_empty());
        assert_eq!(recv_n(&r.peers[2], 1), vec![f.clone()]);
        // Packet-out through the pipeline: in_port=1 and a rule for it.
        c.add_flow("table=0,priority=20,in_port=1,actions=output:2");
        let po = PacketOut {
            buffer_id: NO_BUFFER,
            in_port: 1,
            actions: vec![Act::Output { port: port::OFPP_TABLE, max_len: 0 }],
            data: f.clone(),
        };
        assert!(c.call(&Message::PacketOut(po)).is_empty());
        assert_eq!(recv_n(&r.peers[1], 1), vec![f.clone()]);
        // Bad packet-outs get OpenFlow's errors.
        let bad = PacketOut { buffer_id: 7, in_port: 1, actions: vec![], data: f.clone() };
        let got = c.call(&Message::PacketOut(bad));
        assert!(
            matches!(&got[..], [Message::Error { code, .. }] if *code == kairo_ofp::ErrorCode::BUFFER_UNKNOWN),
            "{got:?}"
        );
        // The quiet controller got no packet-in (only what it asked for: a barrier reply).
        if v == Version::V1_3 {
            quiet.s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            assert!(quiet.call(&Message::EchoRequest(vec![1])).iter().all(|m| matches!(m, Message::EchoReply(_))));
        }
        assert_eq!(r.sw.controller_dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}

/// The next FLOW_REMOVED, skipping other asynchronous messages (bounded wait).
fn flow_removed(c: &mut Client) -> kairo_ofp::message::FlowRemoved {
    loop {
        if let Message::FlowRemoved(f) = c.recv() {
            return f;
        }
    }
}

#[test]
fn timeouts_remove_rules_and_tell_the_controller() {
    for v in Version::ALL {
        let r = start("", 2, EngineKind::Incremental);
        let (_dir, path) = listen(&r);
        let mut c = Client::connect(&path, v);
        c.add_flow("priority=9,cookie=0x31,hard_timeout=1,send_flow_rem,udp,tp_dst=1,actions=output:2");
        // A hard timeout ends the rule however busy it is.
        for _ in 0..5 {
            r.peers[0].inject.send(frame(1, 1)).unwrap();
        }
        let f = flow_removed(&mut c);
        assert_eq!((f.cookie, f.reason, f.hard_timeout), (0x31, 1, 1), "{f:?}");
        assert!(f.duration_sec >= 1, "{f:?}");
        assert_eq!(f.packet_count, 5, "{f:?}");
        assert_eq!(recv_n(&r.peers[1], 5).len(), 5);
        c.add_flow("priority=8,cookie=0x32,idle_timeout=1,send_flow_rem,udp,tp_dst=2,actions=output:2");
        // Traffic keeps an idle rule alive past its timeout...
        let deadline = std::time::Instant::now() + Duration::from_millis(2500);
        let mut sent = 0u64;
        while std::time::Instant::now() < deadline {
            r.peers[0].inject.send(frame(1, 2)).unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_millis(150));
        }
        assert_eq!(recv_n(&r.peers[1], sent as usize).len() as u64, sent, "forwarded by the idle rule");
        {
            let ctl = r.sw.ctl.lock();
            let kept = ctl.pipeline().tables().flat_map(|(_, t)| t.cls.iter()).any(|x| x.payload.cookie == 0x32);
            assert!(kept, "the idle rule expired while in use");
        }
        // ...and it goes a timeout after the traffic stops, with its counts.
        let f = flow_removed(&mut c);
        assert_eq!((f.cookie, f.reason, f.idle_timeout), (0x32, 0, 1), "{f:?}");
        assert_eq!(f.packet_count, sent, "{f:?}");
        assert!(f.duration_sec >= 2, "{f:?}");
        let ctl = r.sw.ctl.lock();
        assert_eq!(ctl.pipeline().n_rules(), 0);
    }
}

/// OpenFlow's barrier is kairo's acknowledgement: once the reply to a
/// barrier after a FLOW_MOD arrives, the next packet of an affected flow is
/// forwarded by the new rule, while other traffic keeps the flow's megaflow
/// hot and the cache holds many others.
#[test]
fn after_a_barrier_reply_the_next_packet_takes_the_new_rule() {
    use kairo_flow::Field;
    use std::sync::atomic::Ordering;
    const RULES: u16 = 200;
    let flows: String =
        (0..RULES).map(|j| format!("priority=10,in_port=1,udp,tp_dst={j},actions=output:2\n")).collect();
    let r = start(&flows, 2, EngineKind::Incremental);
    let (_dir, path) = listen(&r);
    let mut c = Client::connect(&path, Version::V1_3);
    // Fill the cache: one megaflow per rule.
    for j in 0..RULES {
        r.peers[0].inject.send(frame(1, j)).unwrap();
    }
    assert_eq!(recv_n(&r.peers[1], usize::from(RULES)).len(), usize::from(RULES));
    // Background traffic on the flow being changed, racing every update.
    let stop = Arc::new(AtomicBool::new(false));
    let inject = r.peers[0].inject.clone();
    let bg = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = inject.send(frame(1, 5));
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    for i in 1..=150u64 {
        let mac = format!("00:00:00:00:{:02x}:{:02x}", i >> 8, i & 0xff);
        let text = format!("priority=10,in_port=1,udp,tp_dst=5,actions=mod_dl_src:{mac},output:2");
        let fm = flow_mod(&text, Version::V1_3, ofpfc::MODIFY_STRICT, 0);
        assert!(c.call(&Message::FlowMod(fm)).is_empty());
        // The barrier reply is in: the marker (tp_src 40000 + i) must carry stamp i.
        let mut marker = kairo_wire::emit::frame(&udp_key(1, 0x0200_0000_0001, 40000 + i as u16, 5), b"marker");
        r.peers[0].inject.send(std::mem::take(&mut marker)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(std::time::Instant::now() < deadline, "marker {i} never came out");
            let Ok(f) = r.peers[1].sent.recv_timeout(Duration::from_millis(100)) else { continue };
            let (k, _) = kairo_wire::parse(&f, 2);
            if k.get(Field::TpSrc) == 40000 + i {
                assert_eq!(k.get(Field::EthSrc), i, "update {i}: the packet after the barrier reply took an old rule");
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    bg.join().unwrap();
    assert!(r.sw.ctl.lock().engine.len() >= usize::from(RULES), "the cache stayed full");
}

/// PORT_MOD's configuration bits act on forwarding (no_fwd, no_recv,
/// no_packet_in) and every change reaches the controllers as PORT_STATUS;
/// a bad port, address or bit gets OpenFlow's error.
#[test]
fn port_mod_acts_and_port_status_tells() {
    use kairo_ofp::message::{ofppc, ofppr, PortMod};
    use kairo_ofp::multipart::{MpReply, MpRequest};
    for v in Version::ALL {
        let r = start("", 3, EngineKind::Incremental);
        let (_dir, path) = listen(&r);
        let mut c = Client::connect(&path, v);
        c.add_flow("priority=10,in_port=1,actions=output:2");
        c.add_flow("priority=10,in_port=3,actions=CONTROLLER:65535");
        let descs = |c: &mut Client| -> Vec<kairo_ofp::message::PortDesc> {
            let got = c.call(&Message::MultipartRequest { flags: 0, body: MpRequest::PortDesc(port::OFPP_ANY) });
            got.into_iter()
                .flat_map(|m| match m {
                    Message::MultipartReply { body: MpReply::PortDesc(d), .. } => d,
                    _ => vec![],
                })
                .collect()
        };
        let d = descs(&mut c);
        let hw = |n: u32| d.iter().find(|p| p.port_no == n).expect("port").hw_addr;
        r.peers[0].inject.send(frame(1, 5)).unwrap();
        assert_eq!(recv_n(&r.peers[1], 1).len(), 1, "forwarded before any PORT_MOD");
        let pm = |port_no, config, mask| PortMod { port_no, hw_addr: hw(port_no.min(3)), config, mask, advertise: 0 };
        // A PORT_MOD that succeeds, and the PORT_STATUS it causes (which may
        // come before or after the barrier reply: asynchronous messages have
        // their own queue).
        let modify = |c: &mut Client, m: PortMod| -> (u8, kairo_ofp::message::PortDesc) {
            let mut got = c.call(&Message::PortMod(m));
            let m = if got.is_empty() { c.recv() } else { got.remove(0) };
            assert!(got.is_empty(), "{got:?}");
            match m {
                Message::PortStatus { reason, desc } => (reason, desc),
                other => panic!("expected a port status, got {other:?}"),
            }
        };
        // no_fwd on port 2: the same packet is dropped on its way out, and counted.
        let (reason, desc) = modify(&mut c, pm(2, ofppc::NO_FWD, ofppc::NO_FWD));
        assert_eq!((reason, desc.port_no, desc.config), (ofppr::MODIFY, 2, ofppc::NO_FWD));
        r.peers[0].inject.send(frame(1, 5)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(r.peers[1].sent.try_recv().is_err(), "no_fwd port sent a packet");
        let tx_dropped = |i: usize| r.sw.ports()[i].counters.tx_dropped.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(tx_dropped(1), 1);
        // Cleared: forwarding again. no_recv on port 1: what it receives goes nowhere.
        assert_eq!(modify(&mut c, pm(2, 0, ofppc::NO_FWD)).1.config, 0);
        assert_eq!(modify(&mut c, pm(1, ofppc::NO_RECV, ofppc::NO_RECV)).1.config, ofppc::NO_RECV);
        r.peers[0].inject.send(frame(1, 5)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(r.peers[1].sent.try_recv().is_err(), "a no_recv port's packet was forwarded");
        // no_packet_in on port 3: its table-miss-like controller action sends nothing.
        assert_eq!(modify(&mut c, pm(3, ofppc::NO_PACKET_IN, ofppc::NO_PACKET_IN)).1.config, ofppc::NO_PACKET_IN);
        r.peers[2].inject.send(frame(3, 5)).unwrap();
        c.s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut h = [0u8; 8];
        assert!(std::io::Read::read(&mut c.s, &mut h).is_err(), "a packet-in from a no_packet_in port");
        c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(descs(&mut c).iter().find(|p| p.port_no == 3).map(|p| p.config), Some(ofppc::NO_PACKET_IN));
        // Errors: no such port, another address, a bit kairo does not set.
        let err = |c: &mut Client, m: PortMod| match &c.call(&Message::PortMod(m))[..] {
            [Message::Error { code, .. }] => *code,
            other => panic!("expected an error, got {other:?}"),
        };
        assert_eq!(err(&mut c, pm(9, 0, ofppc::NO_FWD)), kairo_ofp::ErrorCode::PORT_MOD_BAD_PORT);
        let mut wrong = pm(2, 0, ofppc::NO_FWD);
        wrong.hw_addr[5] ^= 1;
        assert_eq!(err(&mut c, wrong), kairo_ofp::ErrorCode::PORT_MOD_BAD_HW_ADDR);
        assert_eq!(err(&mut c, pm(2, 2, 2)), kairo_ofp::ErrorCode::PORT_MOD_BAD_CONFIG);
    }
}

/// A port configured down (PORT_MOD port_down) is no longer live for fast
/// failover: the group's next bucket takes the traffic, through cache
/// maintenance, and the first comes back when the port does.
#[test]
fn fast_failover_follows_port_down() {
    use kairo_ofp::message::{ofppc, PortMod};
    use kairo_ofp::multipart::{MpReply, MpRequest};
    let r = start("", 3, EngineKind::Incremental);
    let g = kairo_ofproto::parse_group(
        "group_id=1,type=ff,bucket=watch_port:2,actions=output:2,bucket=watch_port:3,actions=output:3",
    )
    .unwrap();
    r.sw.apply(&kairo_maintain::FlowMod::AddGroup(g)).unwrap();
    let (_dir, path) = listen(&r);
    let mut c = Client::connect(&path, Version::V1_3);
    c.add_flow("priority=10,in_port=1,actions=group:1");
    let hw2 = c
        .call(&Message::MultipartRequest { flags: 0, body: MpRequest::PortDesc(port::OFPP_ANY) })
        .into_iter()
        .flat_map(|m| match m {
            Message::MultipartReply { body: MpReply::PortDesc(d), .. } => d,
            _ => vec![],
        })
        .find(|p| p.port_no == 2)
        .expect("port 2")
        .hw_addr;
    let to = |n: usize| {
        r.peers[0].inject.send(frame(1, 5)).unwrap();
        assert_eq!(recv_n(&r.peers[n - 1], 1).len(), 1, "to port {n}");
    };
    to(2);
    let pm = |config| PortMod { port_no: 2, hw_addr: hw2, config, mask: ofppc::PORT_DOWN, advertise: 0 };
    c.call(&Message::PortMod(pm(ofppc::PORT_DOWN)));
    to(3);
    to(3);
    c.call(&Message::PortMod(pm(0)));
    to(2);
    assert!(r.sw.ctl.lock().verify().is_empty());
}

/// Ports added and removed while the switch runs: FLOOD reaches the new
/// port through cache maintenance (the megaflow made before is updated, not
/// left stale), a removed port gets nothing, and the controller hears
/// PORT_STATUS ADD and DELETE.
#[test]
fn ports_added_and_removed_at_run_time() {
    use kairo_ofp::message::ofppr;
    let r = start("priority=10,in_port=1,actions=FLOOD", 2, EngineKind::Incremental);
    let (_dir, path) = listen(&r);
    let mut c = Client::connect(&path, Version::V1_3);
    let status = |c: &mut Client| match c.recv() {
        Message::PortStatus { reason, desc } => (reason, desc.port_no),
        other => panic!("expected a port status, got {other:?}"),
    };
    r.peers[0].inject.send(frame(1, 5)).unwrap();
    assert_eq!(recv_n(&r.peers[1], 1).len(), 1);
    let (p3, peer3) = kairo_switch::MemPort::pair();
    let att = kairo_switch::Attached { ofport: 3, name: "mem3".into(), io: Box::new(p3), counters: Default::default() };
    r.sw.add_port(att).unwrap();
    assert_eq!(status(&mut c), (ofppr::ADD, 3));
    // The same flow again: the cached megaflow now floods to port 3 as well.
    r.peers[0].inject.send(frame(1, 5)).unwrap();
    assert_eq!(recv_n(&r.peers[1], 1).len(), 1);
    assert_eq!(recv_n(&peer3, 1).len(), 1, "the new port gets the flood");
    // A port number or name in use is refused, and changes nothing.
    let (p4, _peer4) = kairo_switch::MemPort::pair();
    let dup = kairo_switch::Attached { ofport: 3, name: "mem4".into(), io: Box::new(p4), counters: Default::default() };
    assert!(r.sw.add_port(dup).unwrap_err().contains("exists"));
    assert_eq!(r.sw.ports().len(), 3);
    r.sw.del_port("mem2").unwrap();
    assert_eq!(status(&mut c), (ofppr::DELETE, 2));
    assert!(r.sw.del_port("9").is_err());
    r.peers[0].inject.send(frame(1, 5)).unwrap();
    assert_eq!(recv_n(&peer3, 1).len(), 1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(r.peers[1].sent.try_recv().is_err(), "a removed port was sent a packet");
    assert!(r.sw.ctl.lock().verify().is_empty());
    assert_eq!(r.sw.ctl.lock().pipeline().ports().collect::<Vec<_>>(), vec![1, 3]);
}

/// A modify with OFPFF_RESET_COUNTS starts the modified rule's counters
/// again; one without keeps them (as Open vSwitch).
#[test]
fn modify_with_reset_counts_clears_the_rules_counters() {
    use kairo_ofp::multipart::{FlowStatsRequest, MpReply, MpRequest};
    for v in Version::ALL {
        let r = start("", 2, EngineKind::Incremental);
        let (_dir, path) = listen(&r);
        let mut c = Client::connect(&path, v);
        c.add_flow("priority=10,in_port=1,actions=output:2");
        let packets = |c: &mut Client| -> u64 {
            let req = FlowStatsRequest {
                table_id: 0xff,
                out_port: port::OFPP_ANY,
                out_group: OFPG_ANY,
                cookie: 0,
                cookie_mask: 0,
                fields: vec![],
            };
            let got = c.call(&Message::MultipartRequest { flags: 0, body: MpRequest::Flow(req) });
            match &got[..] {
                [Message::MultipartReply { body: MpReply::Flow(f), .. }] if f.len() == 1 => f[0].packet_count,
                other => panic!("{other:?}"),
            }
        };
        let send = |n: usize| {
            for _ in 0..n {
                r.peers[0].inject.send(frame(1, 5)).unwrap();
            }
            assert_eq!(recv_n(&r.peers[1], n).len(), n);
        };
        send(3);
        assert_eq!(packets(&mut c), 3);
        let modify = |c: &mut Client, flags: u16| {
            let fm = flow_mod("priority=10,in_port=1,actions=output:2", c.v, ofpfc::MODIFY_STRICT, flags);
            assert!(c.call(&Message::FlowMod(fm)).is_empty());
        };
        modify(&mut c, 0);
        assert_eq!(packets(&mut c), 3, "a modify without reset_counts keeps the counters");
        modify(&mut c, kairo_ofp::message::ofpff::RESET_COUNTS);
        assert_eq!(packets(&mut c), 0, "reset_counts");
        send(2);
        assert_eq!(packets(&mut c), 2);
    }
}

/// The next PACKET_IN or NXT_PACKET_IN2, skipping other asynchronous
/// messages (bounded wait).
fn next_packet_in(c: &mut Client) -> Message {
    loop {
        match c.recv() {
            m @ (Message::PacketIn(_) | Message::PacketIn2(_)) => return m,
            _ => continue,
        }
    }
}

/// A packet-in says what the pipeline held at the controller action (in_port,
/// registers, metadata: Open vSwitch's `flow_get_metadata`), in OpenFlow's
/// PACKET_IN or, for a connection that asked with NXT_SET_PACKET_IN_FORMAT,
/// in NXT_PACKET_IN2 with the action's userdata; `controller(id=N)` goes to
/// the connections that set id N with NXT_SET_CONTROLLER_ID; NXT_PACKET_IN
/// (format 1) is refused with OFPBRC_EPERM.
#[test]
fn packet_in2_carries_userdata_and_the_pipeline_s_metadata() {
    use kairo_ofp::message::nxpif;
    use kairo_ofp::oxm::OxmId;
    let r = start("", 2, EngineKind::Incremental);
    let (_dir, path) = listen(&r);
    let mut c = Client::connect(&path, Version::V1_3);
    let mut plain = Client::connect(&path, Version::V1_3);
    let mut seven = Client::connect(&path, Version::V1_3);
    assert!(c.call(&Message::SetPacketInFormat(nxpif::NXT_PACKET_IN2)).is_empty());
    assert!(seven.call(&Message::SetControllerId(7)).is_empty());
    let got = plain.call(&Message::SetPacketInFormat(nxpif::NXT_PACKET_IN));
    assert!(
        matches!(&got[..], [Message::Error { code, .. }] if *code == kairo_ofp::ErrorCode::REQUEST_EPERM),
        "{got:?}"
    );
    c.add_flow(
        "table=0,priority=10,cookie=0x5,udp,tp_dst=99,actions=load:0x2a->NXM_NX_REG3[],\
         controller(userdata=01.02.03,max_len=20)",
    );
    c.add_flow("table=0,priority=10,udp,tp_dst=98,actions=controller(id=7)");
    let f = frame(2, 99);
    r.peers[1].inject.send(f.clone()).unwrap();
    let reg3 = OxmId::by_name("NXM_NX_REG3").unwrap().id;
    let Message::PacketIn2(p) = next_packet_in(&mut c) else { panic!("NXT_PACKET_IN2 expected") };
    assert_eq!((p.reason, p.table_id, p.cookie, p.userdata.as_deref()), (1, 0, Some(5), Some(&[1u8, 2, 3][..])));
    assert_eq!((p.data.as_slice(), p.full_len), (&f[..20], Some(f.len() as u32)));
    assert!(p.metadata.iter().any(|o| o.id == OxmId::basic(0) && o.value == 2), "{:?}", p.metadata);
    assert!(p.metadata.iter().any(|o| o.id == reg3 && o.value == 0x2a), "{:?}", p.metadata);
    // OpenFlow's PACKET_IN carries the same metadata (and no userdata).
    let Message::PacketIn(q) = next_packet_in(&mut plain) else { panic!("PACKET_IN expected") };
    assert!(q.fields.iter().any(|o| o.id == reg3 && o.value == 0x2a), "{:?}", q.fields);
    // controller(id=7): only the connection with that id.
    r.peers[0].inject.send(frame(1, 98)).unwrap();
    let Message::PacketIn(s) = next_packet_in(&mut seven) else { panic!("PACKET_IN expected") };
    assert_eq!(s.fields[0].value, 1);
    for quiet in [&mut c, &mut plain] {
        quiet.s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let got = quiet.call(&Message::EchoRequest(vec![1]));
        assert!(got.iter().all(|m| matches!(m, Message::EchoReply(_))), "{got:?}");
    }
}

/// Real `ovs-ofctl monitor` (which asks for NXT_PACKET_IN2 by default)
/// reads kairo's packet-ins: the userdata and the registers as Open vSwitch
/// prints them. SKIPPED without ovs-ofctl (a failure under KAIRO_REQUIRE_OVS=1).
#[test]
fn ovs_ofctl_monitor_reads_kairo_s_packet_in2() {
    if !std::process::Command::new("ovs-ofctl").arg("--version").output().is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("KAIRO_REQUIRE_OVS").as_deref() != Ok("1"),
            "KAIRO_REQUIRE_OVS=1 but ovs-ofctl is not installed"
        );
        eprintln!("SKIPPED ovs_ofctl_monitor_reads_kairo_s_packet_in2: ovs-ofctl is not installed here");
        return;
    }
    let r = start(
        "table=0,priority=10,udp,actions=load:0x2a->NXM_NX_REG3[],controller(userdata=0a.0b.0c)",
        2,
        EngineKind::Incremental,
    );
    let (dir, path) = listen(&r);
    // (Line-buffered: its output is read after it is killed. Its control
    // socket goes into the test's directory.)
    let mut mon = std::process::Command::new("stdbuf")
        .args(["-oL", "ovs-ofctl", "-O", "OpenFlow13", "monitor"])
        .arg(format!("unix:{}", path.display()))
        .env("OVS_RUNDIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ovs-ofctl monitor");
    // A packet now and then: those before it has connected and asked for
    // its format go to no one or in another format.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        r.peers[1].inject.send(frame(2, 53)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = mon.kill();
    let out = mon.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("NXT_PACKET_IN2"), "{text}");
    assert!(text.contains("userdata=0a.0b.0c"), "{text}");
    assert!(text.contains("reg3=0x2a") && text.contains("in_port=2"), "{text}");
}

//! The switch in-process, on in-memory ports: the control socket's commands
//! and errors, several clients at once, forwarding with rule counters.

mod common;

use std::time::{Duration, Instant};

use common::{call, recv_n, start, start_with, udp_key};
use kairo_flow::{Field, FlowKey};
use kairo_maintain::EngineKind;
use kairo_switch::ctl::Client;
use kairo_switch::lock;

const L2: &str = "in_port=1 actions=output:2\nin_port=2 actions=output:1\n";

#[test]
fn commands_answer_like_ovs_ofctl_and_bad_requests_change_nothing() {
    let r = start(L2, 2, EngineKind::Incremental);
    let mut c = Client::connect(&r.sock).expect("connect");
    let before = call(&mut c, "dump-flows", &[]).expect("dump-flows");
    assert_eq!(before.lines().count(), 2, "{before}");
    assert!(
        before.contains(" cookie=0x0, table=0, n_packets=0, n_bytes=0, priority=32768,in_port=1 actions=output:2"),
        "{before}"
    );

    // Malformed requests: each gets an error naming the problem; the rules stay as they were.
    let e = call(&mut c, "add-flow", &["in_port=1,bogus=3 actions=drop"]).unwrap_err();
    assert!(e.contains("bogus"), "{e}");
    let e = call(&mut c, "add-flow", &["in_port=1 actions=output:notaport"]).unwrap_err();
    assert!(e.contains("notaport"), "{e}");
    let e = call(&mut c, "add-flows", &["in_port=3 actions=drop\nin_port=4 actions=frobnicate\n"]).unwrap_err();
    assert!(e.contains("line 2") && e.contains("frobnicate"), "{e}");
    let e = call(&mut c, "bundle", &["flow add in_port=5 actions=drop\nflow sideways in_port=6\n"]).unwrap_err();
    assert!(e.contains("line 2") && e.contains("sideways"), "{e}");
    let e = call(&mut c, "mod-group", &["group_id=9,type=all,bucket=output:1"]).unwrap_err();
    assert!(e.contains('9'), "{e}");
    let e = call(&mut c, "frobnicate", &[]).unwrap_err();
    assert!(e.contains("unknown command `frobnicate`"), "{e}");
    let e = call(&mut c, "dump-flows", &["table=x"]).unwrap_err();
    assert!(e.contains("table=x"), "{e}");
    let e = call(&mut c, "trace", &["in_port=1,tcp,tp_dst=99999"]).unwrap_err();
    assert!(e.contains("99999"), "{e}");
    assert_eq!(call(&mut c, "dump-flows", &[]).unwrap(), before, "a failed request changed the rules");

    // A request that is not JSON: an error reply, and the connection keeps working.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&r.sock).expect("connect");
        s.write_all(b"{not json\n").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\":false") && line.contains("malformed request"), "{line}");
    }

    // Updates, groups, bundles, strict deletes.
    call(&mut c, "add-flow", &["table=0,priority=100,udp,tp_dst=53 actions=group:7"]).unwrap_err();
    call(&mut c, "add-group", &["group_id=7,type=all,bucket=output:2"]).unwrap();
    call(&mut c, "add-flow", &["table=0,priority=100,udp,tp_dst=53 actions=group:7"]).unwrap();
    assert!(call(&mut c, "dump-groups", &[]).unwrap().contains("group_id=7,type=all,bucket="));
    call(
        &mut c,
        "bundle",
        &["flow add priority=5,in_port=9 actions=drop\ngroup add group_id=8,type=all,bucket=output:1\n"],
    )
    .unwrap();
    let flows = call(&mut c, "dump-flows", &[]).unwrap();
    assert_eq!(flows.lines().count(), 4, "{flows}");
    assert!(flows.contains("priority=100,udp,tp_dst=53 actions=group:7"), "{flows}");
    call(&mut c, "del-flows", &["--strict", "priority=5,in_port=9"]).unwrap();
    assert_eq!(call(&mut c, "dump-flows", &[]).unwrap().lines().count(), 3);
    let t = call(&mut c, "trace", &["in_port=3,udp,tp_dst=53"]).unwrap();
    assert!(t.contains("group:7"), "{t}");
    let show = call(&mut c, "show", &[]).unwrap();
    assert!(show.contains(" 1(mem1): mem") && show.contains(" 2(mem2): mem"), "{show}");
    let stats = call(&mut c, "stats", &[]).unwrap();
    assert!(stats.contains("updates: 4") && stats.contains("time-to-update median"), "{stats}");
    call(&mut c, "del-flows", &[]).unwrap();
    assert_eq!(call(&mut c, "dump-flows", &[]).unwrap(), "");
    // A trace follows the recirculation a ct makes; stats count connections and fragments.
    call(&mut c, "add-flow", &["table=0,priority=200,ip,ct_state=-trk,actions=ct(table=1,zone=3)"]).unwrap();
    call(&mut c, "add-flow", &["table=1,priority=1,ip,ct_state=+trk,actions=output:2"]).unwrap();
    let t = call(&mut c, "trace", &["in_port=1,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_dst=53"]).unwrap();
    assert!(
        t.contains("ct(zone=3),recirc(0x") && t.contains("resume conntrack with ct_state=new|trk,ct_zone=3"),
        "{t}"
    );
    let stats = call(&mut c, "stats", &[]).unwrap();
    assert!(stats.contains("conntrack: 0 connections") && stats.contains("fragments: 0 held"), "{stats}");
    call(&mut c, "del-flows", &[]).unwrap();
}

/// New flows arriving while an update holds the control state (a long
/// one: here the test holds it) are forwarded all the same, translated
/// against the published rule tables; their megaflow is offered for
/// registration and `stats` counts it.
#[test]
fn new_flows_are_forwarded_while_an_update_holds_the_control_state() {
    let r = start(L2, 2, EngineKind::Incremental);
    let mut c = Client::connect(&r.sock).expect("connect");
    let held = r.sw.ctl.lock();
    let got = ten_hellos(&r);
    assert_eq!(got.len(), 10);
    drop(held);
    let stats = call(&mut c, "stats", &[]).unwrap();
    assert!(
        stats.contains(
            "upcalls while an update ran: 1 (megaflows registered after it 1, not kept 0, lessons dropped 0)"
        ),
        "{stats}"
    );
    // Registered once the control state is free again: maintained like any other.
    // (A change that keeps its mask, so that it is updated, not evicted.)
    call(&mut c, "mod-flows", &["in_port=1 actions=output:2,output:2"]).unwrap();
    let mf = call(&mut c, "dump-megaflows", &[]).unwrap();
    assert!(mf.contains("packets:10") && mf.contains("actions:2,2"), "{mf}");
}

/// Ten UDP frames of ten flows into port 1, and what leaves port 2 (all ten).
fn ten_hellos(r: &common::Running) -> Vec<Vec<u8>> {
    for i in 0..10u16 {
        r.peers[0].inject.send(kairo_wire::emit::frame(&udp_key(1, 0x0200_0000_0001, 1000 + i, 80), b"hello")).unwrap();
    }
    let got = recv_n(&r.peers[1], 10);
    assert_eq!(got.len(), 10, "frames out of port 2");
    got
}

#[test]
fn forwards_counts_per_rule_and_dumps_megaflows() {
    let r = start(L2, 2, EngineKind::Incremental);
    let mut c = Client::connect(&r.sock).expect("connect");
    let got = ten_hellos(&r);
    let (k, _) = kairo_wire::parse(&got[0], 2);
    assert_eq!(k.get(Field::TpSrc), 1000);
    let flows = call(&mut c, "dump-flows", &[]).unwrap();
    let len = got[0].len();
    assert!(flows.contains(&format!("n_packets=10, n_bytes={}, priority=32768,in_port=1 ", 10 * len)), "{flows}");
    let mf = call(&mut c, "dump-megaflows", &[]).unwrap();
    assert!(mf.contains("in_port=1") && mf.contains("packets:10") && mf.contains("actions:2"), "{mf}");
    // Counters survive the megaflows leaving the cache (a higher-priority rule evicts them).
    call(&mut c, "add-flow", &["priority=40000,in_port=1 actions=drop"]).unwrap();
    r.peers[0].inject.send(kairo_wire::emit::frame(&udp_key(1, 1, 1, 80), b"x")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !call(&mut c, "dump-flows", &[]).unwrap().contains("n_packets=1,") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let flows = call(&mut c, "dump-flows", &[]).unwrap();
    assert!(
        flows.contains("n_packets=1, n_bytes=") && flows.contains("priority=40000,in_port=1 actions=drop"),
        "{flows}"
    );
    assert!(flows.contains(&format!("n_packets=10, n_bytes={}, priority=32768,in_port=1 ", 10 * len)), "{flows}");
}

#[test]
fn counters_of_a_megaflow_evicted_by_an_update_stay_with_its_rule() {
    let r = start(L2, 2, EngineKind::Incremental);
    let mut c = Client::connect(&r.sock).expect("connect");
    let got = ten_hellos(&r);
    let len = got[0].len();
    let counted = format!("n_packets=10, n_bytes={}, priority=32768,in_port=1 ", 10 * len);
    // A narrower rule above: the megaflow (in_port=1, every UDP port) no
    // longer holds and is evicted; the datapath lets go of it only on its
    // next lookup, so its counts are read from it while it lingers.
    call(&mut c, "add-flow", &["priority=40000,in_port=1,udp,tp_src=1000 actions=drop"]).unwrap();
    let mf = call(&mut c, "dump-megaflows", &[]).unwrap();
    assert!(!mf.contains("in_port=1"), "the megaflow was not evicted:\n{mf}");
    let flows = call(&mut c, "dump-flows", &[]).unwrap();
    assert!(flows.contains(&counted), "{flows}");
    // And once the datapath has let go of it (a lookup reclaims it; a hit
    // on another megaflow replaces it as the last one hit).
    for _ in 0..2 {
        r.peers[0].inject.send(kairo_wire::emit::frame(&udp_key(1, 1, 1000, 80), b"x")).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !call(&mut c, "dump-flows", &[]).unwrap().contains("n_packets=2,") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // (The forwarding thread settles departed megaflows' counters into
    // the rules' at its idle sweep, every 100 ms.)
    std::thread::sleep(Duration::from_millis(300));
    let flows = call(&mut c, "dump-flows", &[]).unwrap();
    assert!(flows.contains("n_packets=2, n_bytes=") && flows.contains("tp_src=1000 actions=drop"), "{flows}");
    assert!(flows.contains(&counted), "{flows}");
}

#[test]
fn group_files_chains_and_cookie_masks_behave_as_in_ovs_ofctl() {
    let r = start(L2, 2, EngineKind::Incremental);
    let mut c = Client::connect(&r.sock).expect("connect");
    // A group file may name a group it defines further down.
    call(&mut c, "add-groups", &["group_id=1,type=all,bucket=group:2\ngroup_id=2,type=all,bucket=output:2\n"])
        .expect("forward reference in a group file");
    // A loop is still refused, whole.
    let e = call(&mut c, "add-groups", &["group_id=5,type=all,bucket=group:6\ngroup_id=6,type=all,bucket=group:5\n"])
        .unwrap_err();
    assert!(e.contains("refers to itself"), "{e}");
    assert!(!call(&mut c, "dump-groups", &[]).unwrap().contains("group_id=5"));
    call(&mut c, "add-flow", &["priority=9,udp,tp_dst=7 actions=group:1"]).expect("add-flow");
    // Deleting every group deletes chained ones too (and the rules using them).
    call(&mut c, "del-groups", &[]).expect("del-groups");
    assert_eq!(call(&mut c, "dump-groups", &[]).unwrap(), "");
    assert!(!call(&mut c, "dump-flows", &[]).unwrap().contains("group:1"));
    // A cookie mask of -1 is every bit.
    call(&mut c, "add-flow", &["cookie=0x77,priority=5,in_port=9 actions=drop"]).expect("add-flow");
    call(&mut c, "add-flow", &["cookie=0x78,priority=5,in_port=8 actions=drop"]).expect("add-flow");
    call(&mut c, "del-flows", &["cookie=0x77/-1"]).expect("cookie mask -1");
    let flows = call(&mut c, "dump-flows", &[]).unwrap();
    assert!(!flows.contains("cookie=0x77") && flows.contains("cookie=0x78"), "{flows}");
    let e = call(&mut c, "del-flows", &["cookie=0x78/zz"]).unwrap_err();
    assert!(e.contains("cookie=0x78/zz"), "{e}");
}

#[test]
fn several_clients_update_at_once() {
    let r = start(L2, 2, EngineKind::Incremental);
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let sock = r.sock.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&sock).expect("connect");
                for i in 0..50 {
                    call(
                        &mut c,
                        "add-flow",
                        &[&format!("priority=10,udp,tp_dst={} actions=output:{}", t * 100 + i, 1 + i % 2)],
                    )
                    .expect("add-flow");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let mut c = Client::connect(&r.sock).expect("connect");
    assert_eq!(call(&mut c, "dump-flows", &[]).unwrap().lines().count(), 202);
    assert_eq!(lock(&r.sw.updates).total, 200);
}

#[test]
fn idle_megaflows_expire_while_traffic_runs_and_keep_their_counts() {
    let cfg = kairo_datapath::DpConfig { max_idle_ms: 200, ..Default::default() };
    let flows = "priority=10,udp,tp_dst=1 actions=output:2\npriority=10,udp,tp_dst=2 actions=output:2\n";
    let r = start_with(flows, 2, EngineKind::Incremental, cfg);
    let mut c = Client::connect(&r.sock).expect("connect");
    // Flow B once, then flow A without pause for a second.
    r.peers[0].inject.send(kairo_wire::emit::frame(&udp_key(1, 1, 7, 2), b"b")).unwrap();
    let t0 = Instant::now();
    let mut sent = 1;
    while t0.elapsed() < Duration::from_millis(1000) {
        r.peers[0].inject.send(kairo_wire::emit::frame(&udp_key(1, 1, 7, 1), b"a")).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(recv_n(&r.peers[1], sent).len(), sent);
    let mf = call(&mut c, "dump-megaflows", &[]).unwrap();
    assert!(mf.contains("tp_dst=1") && !mf.contains("tp_dst=2"), "flow B's megaflow did not expire:\n{mf}");
    let flows = call(&mut c, "dump-flows", &[]).unwrap();
    let b = flows.lines().find(|l| l.contains("udp,tp_dst=2")).expect("rule B");
    assert!(b.contains("n_packets=1,"), "flow B's packet left with its megaflow: {b}");
    // Found idle off the forwarding thread and let go of by it: the
    // datapath holds one megaflow and counted one expiry.
    let stats = call(&mut c, "stats", &[]).unwrap();
    assert!(stats.contains("megaflows: 1 (limit") && stats.contains("expired idle 1,"), "{stats}");
}

#[test]
fn flood_reaches_every_other_port() {
    let r = start("arp actions=FLOOD\nip actions=drop\n", 3, EngineKind::Incremental);
    let mut arp = FlowKey::ZERO
        .with(Field::InPort, 2)
        .with(Field::EthSrc, 0x0200_0000_0002)
        .with(Field::EthDst, 0xffff_ffff_ffff)
        .with(Field::EthType, 0x0806)
        .with(Field::ArpOp, 1);
    arp.set(Field::ArpSpa, 0x0a00_0002);
    arp.set(Field::ArpTpa, 0x0a00_0001);
    r.peers[1].inject.send(kairo_wire::emit::frame(&arp, &[])).unwrap();
    assert_eq!(recv_n(&r.peers[0], 1).len(), 1, "port 1");
    assert_eq!(recv_n(&r.peers[2], 1).len(), 1, "port 3");
    assert!(r.peers[1].sent.recv_timeout(Duration::from_millis(200)).is_err(), "flooded back out of the ingress port");
}

/// Two forwarding threads over four ports (each thread reads two and sends
/// to all four through its own handles): every frame leaves by the port
/// its ingress port's rule says, from every port, before and after updates
/// that turn each rule to another port; both threads' datapaths hold
/// megaflows, and the statistics add them up.
#[test]
fn two_forwarding_threads_forward_and_follow_updates() {
    let to = |k: u32, shift: u32| (k - 1 + shift) % 4 + 1;
    let flows: String = (1..=4).map(|i| format!("priority=10,in_port={i},udp actions=output:{}\n", to(i, 1))).collect();
    let r = common::start_threads(&flows, 4, EngineKind::Incremental, Default::default(), 2);
    let mut c = Client::connect(&r.sock).expect("connect");
    for shift in 1..=3u32 {
        if shift > 1 {
            for i in 1..=4u32 {
                let f = format!("priority=10,in_port={i},udp actions=output:{}", to(i, shift));
                call(&mut c, "mod-flows", &["--strict", &f]).unwrap();
            }
        }
        for round in 0..25u16 {
            for i in 1..=4u32 {
                let k = udp_key(i, i as u64, 1000 + round, 53);
                r.peers[i as usize - 1].inject.send(kairo_wire::emit::frame(&k, b"x")).unwrap();
            }
        }
        for i in 1..=4u32 {
            // Port i receives from the port whose rule sends to it.
            let from = (1..=4).find(|&j| to(j, shift) == i).unwrap();
            let got = recv_n(&r.peers[i as usize - 1], 25);
            assert_eq!(got.len(), 25, "shift {shift}: port {i}");
            for f in &got {
                assert_eq!(kairo_wire::parse(f, 0).0.get(Field::EthSrc) as u32, from, "shift {shift}: port {i}");
            }
        }
    }
    let stats = call(&mut c, "stats", &[]).unwrap();
    assert!(stats.contains("packets: 300\n"), "{stats}");
    let mf = call(&mut c, "dump-megaflows", &[]).unwrap();
    for i in 1..=4 {
        assert!(mf.contains(&format!("in_port={i},")), "port {i}'s megaflows:\n{mf}");
    }
    // Each thread's datapath holds the megaflows of the ports it reads.
    let mut held = Vec::new();
    r.sw.each_datapath(|dp| held.push(dp.n_flows()));
    assert_eq!(held, vec![2, 2]);
}

/// At the flow limit an upcall forwards without installing (no sweep of
/// the cache on the forwarding thread), and the expiry thread, seeing the
/// cache full, expires what idled 100 ms, so later flows get megaflows.
#[test]
fn at_the_flow_limit_packets_go_on_and_idle_megaflows_make_room() {
    let cfg = kairo_datapath::DpConfig { flow_limit: 4, ..Default::default() };
    // A rule per UDP source port: each flow its own megaflow.
    let flows: String = (1..=20).map(|p| format!("priority=10,udp,tp_src={p} actions=output:2\n")).collect();
    let r = start_with(&flows, 2, EngineKind::Incremental, cfg);
    let mut c = Client::connect(&r.sock).expect("connect");
    let send = |ports: std::ops::RangeInclusive<u16>| {
        let n = ports.clone().count();
        for p in ports {
            r.peers[0].inject.send(kairo_wire::emit::frame(&udp_key(1, 1, p, 53), b"x")).unwrap();
        }
        assert_eq!(recv_n(&r.peers[1], n).len(), n, "every packet forwarded, cache full or not");
    };
    send(1..=10);
    let stats = call(&mut c, "stats", &[]).unwrap();
    assert!(stats.contains("megaflows: 4 (limit 4), installed 4, not installed 6"), "{stats}");
    // Idle past 100 ms while full: expired, room for the next flows.
    std::thread::sleep(Duration::from_millis(500));
    send(11..=12);
    let stats = call(&mut c, "stats", &[]).unwrap();
    assert!(stats.contains("megaflows: 2 (limit 4), installed 6,"), "{stats}");
}

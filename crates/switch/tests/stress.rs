//! A flood of updates through the control socket while traffic runs (its own
//! test binary, so the memory it measures is the switch's alone).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, udp_key};
use kairo_flow::Field;
use kairo_maintain::EngineKind;
use kairo_switch::ctl::Client;
use kairo_switch::lock;

/// RSS of this process in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const RULES: u64 = 16;

/// The newest update of rule `j` among updates 1..=a (update k rewrites rule
/// k % RULES), or 0 (the rule as loaded).
fn newest_update_of(j: u64, a: u64) -> u64 {
    if a < j {
        return 0;
    }
    let k = (a - j) / RULES * RULES + j;
    if k == 0 {
        0
    } else {
        k
    }
}

/// Every packet injected after an update's reply carries that update's
/// action (or a later one); nothing crashes; the cache and memory stay bounded.
/// Then the same with two forwarding threads (port 2, where the frames
/// leave, read by the second thread: the first sends through its own
/// handle). One test, one after the other: the memory measured is one run's.
#[test]
fn updates_racing_traffic_never_leave_stale_actions() {
    racing(1);
    racing(2);
}

fn racing(threads: usize) {
    // KAIRO_STRESS_UPDATES=N runs a longer flood by hand.
    let updates: u64 = std::env::var("KAIRO_STRESS_UPDATES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    const IN_FLIGHT: u64 = 512;
    // Rule j stamps version 0 into dl_src; update k rewrites rule k % RULES to stamp k.
    let flows: String = (0..RULES)
        .map(|j| format!("priority=10,in_port=1,udp,tp_dst={j} actions=mod_dl_src:00:00:00:00:00:00,output:2\n"))
        .collect();
    let mut r = common::start_threads(&flows, 2, EngineKind::Incremental, Default::default(), threads);
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let rss_at = Arc::new(AtomicU64::new(0));
    let updater = {
        let (sock, acked, done, rss_at) = (r.sock.clone(), acked.clone(), done.clone(), rss_at.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(&sock).expect("connect");
            for k in 1..=updates {
                let j = k % RULES;
                let mac = kairo_flow::parse::format_mac(k);
                let spec = format!("priority=10,in_port=1,udp,tp_dst={j} actions=mod_dl_src:{mac},output:2");
                call(&mut c, "mod-flows", &["--strict", &spec]).expect("mod-flows");
                acked.store(k, Ordering::SeqCst);
                // Churn that traffic never matches: adds and deletes in the same table.
                if k % 5 == 0 {
                    let m = format!("priority=20,in_port=1,udp,tp_dst={}", 1000 + k % 7);
                    if k % 10 == 0 {
                        call(&mut c, "del-flows", &["--strict", &m]).expect("del-flows");
                    } else {
                        call(&mut c, "add-flow", &[&format!("{m} actions=drop")]).expect("add-flow");
                    }
                }
                if k == updates / 4 {
                    rss_at.store(rss_kib(), Ordering::SeqCst);
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    // The receiver checks every frame as it arrives.
    let checker = {
        let received = received.clone();
        let sent_rx = std::mem::replace(&mut r.peers_mut()[1].sent, std::sync::mpsc::channel().1);
        std::thread::spawn(move || {
            let (mut stale, mut checked) = (0u64, 0u64);
            while let Ok(f) = sent_rx.recv_timeout(Duration::from_secs(5)) {
                received.fetch_add(1, Ordering::SeqCst);
                let (key, lay) = kairo_wire::parse(&f, 2);
                let j = key.get(Field::TpDst);
                let Some(l4) = lay.l4 else { panic!("frame without UDP: {f:02x?}") };
                let a = u64::from_be_bytes(f[l4 + 8..l4 + 16].try_into().expect("8-byte payload"));
                let v = key.get(Field::EthSrc);
                assert!(v == 0 || v % RULES == j, "frame with tp_dst={j} stamped by update {v} of another rule");
                let floor = newest_update_of(j, a);
                stale += (v < floor) as u64;
                checked += (floor > 0) as u64;
            }
            (stale, checked)
        })
    };
    // Traffic: each frame carries, in its payload, the last update
    // acknowledged before it was sent; at most IN_FLIGHT frames are queued.
    let (mut sent, mut seq) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done.load(Ordering::SeqCst) && !updater.is_finished() && Instant::now() < deadline {
        if sent - received.load(Ordering::SeqCst) >= IN_FLIGHT {
            std::thread::yield_now();
            continue;
        }
        let a = acked.load(Ordering::SeqCst);
        let j = seq % RULES;
        seq += 1;
        let k = udp_key(1, 0x0200_0000_0001, (seq % 512) as u16, j as u16);
        r.peers[0].inject.send(kairo_wire::emit::frame(&k, &a.to_be_bytes())).expect("inject");
        sent += 1;
    }
    updater.join().expect("updater");
    let (stale, checked) = checker.join().expect("checker");
    let got = received.load(Ordering::SeqCst);
    assert_eq!(got, sent, "every packet forwarded");
    assert_eq!(stale, 0, "{stale} of {sent} packets got actions from before an acknowledged update");
    assert!(checked > 1000, "too few packets overlapped the updates ({checked}) for the test to mean anything");
    let n = lock(&r.sw.dp).n_flows();
    assert!(n <= 2 * RULES as usize + 8, "cache grew to {n} megaflows for {RULES} rules");
    let (rss_mid, rss_end) = (rss_at.load(Ordering::SeqCst), rss_kib());
    assert!(rss_end < rss_mid + 8 * 1024, "memory grew from {rss_mid} KiB to {rss_end} KiB over the flood");
    eprintln!(
        "stress: {updates} updates (+{} churn), {sent} packets, {checked} checked against an acknowledged update, 0 stale, {n} megaflows, RSS {rss_mid} -> {rss_end} KiB",
        updates / 5
    );
}

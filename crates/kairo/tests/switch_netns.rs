//! End to end: `kairo switch` between network namespaces over veth pairs and
//! a TAP device, programmed with `kairo ctl` while `ping` runs.
//!
//! Needs root, iproute2, ping, tcpdump, ethtool and python3. Where they are missing the tests
//! print SKIPPED with the reason, or fail when KAIRO_REQUIRE_NETNS=1 (CI sets
//! it). Every namespace, link and process is removed on drop, also when an
//! assertion fails; every wait is bounded; traffic stays on the test links.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kairo_switch::netns::{run, Netns, Veth};

fn kairo() -> &'static str {
    env!("CARGO_BIN_EXE_kairo")
}

/// None if the test can run; otherwise it has said why (or panicked in CI).
fn skip(test: &str) -> bool {
    let mut why = kairo_switch::netns::unavailable();
    for tool in ["ping", "tcpdump", "ethtool", "python3"] {
        if why.is_none()
            && Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
        {
            why = Some(format!("`{tool}` is not installed"));
        }
    }
    match why {
        None => false,
        Some(w) if std::env::var("KAIRO_REQUIRE_NETNS").is_ok_and(|v| v == "1") => {
            panic!("{test}: KAIRO_REQUIRE_NETNS=1 but {w}")
        }
        Some(w) => {
            eprintln!("SKIPPED {test}: {w} (CI runs it as root with the tools installed)");
            true
        }
    }
}

/// A `kairo switch` process, stopped with SIGTERM on drop.
struct SwitchProc {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl SwitchProc {
    fn start(ports: &[String], flows: &str) -> SwitchProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("ctl.sock");
        let flow_file = dir.path().join("start.flows");
        std::fs::write(&flow_file, flows).expect("write flows");
        let mut cmd = Command::new(kairo());
        cmd.arg("switch").args(ports).arg("--ctl").arg(&sock).arg("--flows").arg(&flow_file);
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start kairo switch");
        let mut s = SwitchProc { child, sock, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&s.sock).is_err() {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("kairo switch exited at start: {st}");
            }
            assert!(Instant::now() < deadline, "kairo switch did not open its control socket in 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// `kairo ctl`; panics with its stderr if it fails.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(kairo()).arg("ctl").arg("--ctl").arg(&self.sock).args(args).output().expect("kairo ctl");
        assert!(out.status.success(), "kairo ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for SwitchProc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exactly `count` echo requests from `ns` to `dst`, 0.2 s apart, the last
/// waiting at most a second for its reply; true if any reply came.
fn ping(ns: &Netns, dst: &str, count: u32) -> bool {
    ns.cmd("ping")
        .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "1", dst])
        .output()
        .expect("ping")
        .status
        .success()
}

/// As [`ping`], over IPv6.
fn ping6(ns: &Netns, dst: &str, count: u32) -> bool {
    ns.cmd("ping")
        .args(["-6", "-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "1", dst])
        .output()
        .expect("ping -6")
        .status
        .success()
}

/// Packets counted by the rule whose dump-flows line contains `needle`.
fn n_packets(dump: &str, needle: &str) -> u64 {
    let line = dump.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no rule `{needle}` in\n{dump}"));
    line.split("n_packets=").nth(1).and_then(|r| r.split(',').next()).and_then(|v| v.parse().ok()).expect("n_packets")
}

struct Topo {
    // Drop order: the switch first, then links, then namespaces.
    a: Netns,
    b: Netns,
    net: String,
}

fn topo(tag: &str) -> (Topo, Veth, Veth) {
    let pid = std::process::id() % 100_000;
    let net = format!("10.{}.{}", 100 + pid % 100, (pid / 100) % 250);
    let a = Netns::new(&format!("kairo-{tag}{pid}a")).expect("netns a");
    let b = Netns::new(&format!("kairo-{tag}{pid}b")).expect("netns b");
    let va = Veth::new(&format!("k{tag}{pid}a"), &format!("k{tag}{pid}ai"), &a, Some(&format!("{net}.1/24")))
        .expect("veth a");
    let vb = Veth::new(&format!("k{tag}{pid}b"), &format!("k{tag}{pid}bi"), &b, Some(&format!("{net}.2/24")))
        .expect("veth b");
    (Topo { a, b, net }, va, vb)
}

/// IPv6 end to end: neighbour discovery steered by `nd_target`, echo
/// requests and replies by `ipv6_dst`, and a rewrite of the destination
/// address and hop limit whose ICMPv6 checksum is checked on the far side.
#[test]
fn ping6_over_ipv6_flows_and_an_address_rewrite() {
    if skip("ping6_over_ipv6_flows_and_an_address_rewrite") {
        return;
    }
    let pid = std::process::id() % 100_000;
    let net = format!("fd00:{:x}:{:x}::", pid % 0xffff, (pid / 7) % 0xffff);
    let (ip_a, ip_b) = (format!("{net}1"), format!("{net}2"));
    let a = Netns::new(&format!("kairo-s{pid}a")).expect("netns a");
    let b = Netns::new(&format!("kairo-s{pid}b")).expect("netns b");
    let va = Veth::new_v6(&format!("ks{pid}a"), &format!("ks{pid}ai"), &a, &format!("{ip_a}/64")).expect("veth a");
    let vb = Veth::new_v6(&format!("ks{pid}b"), &format!("ks{pid}bi"), &b, &format!("{ip_b}/64")).expect("veth b");
    let flows = format!(
        "priority=200,icmp6,icmp_type=135,nd_target={ip_b} actions=output:2\n\
         priority=200,icmp6,icmp_type=135,nd_target={ip_a} actions=output:1\n\
         priority=100,ipv6,ipv6_dst={ip_b} actions=output:2\n\
         priority=100,ipv6,ipv6_dst={ip_a} actions=output:1\n"
    );
    let sw = SwitchProc::start(
        &["--port".into(), format!("{}=1", va.outer), "--port".into(), format!("{}=2", vb.outer)],
        &flows,
    );
    assert!(ping6(&a, &ip_b, 3), "ping6 over IPv6 flows");
    let dump = sw.ctl(&["dump-flows"]);
    assert!(n_packets(&dump, &format!("nd_target={ip_b}")) >= 1, "a neighbour solicitation for b: {dump}");
    assert!(n_packets(&dump, &format!("ipv6_dst={ip_b}")) >= 3, "echo requests to b: {dump}");
    let megaflows = sw.ctl(&["dump-megaflows"]);
    assert!(megaflows.contains("icmp6") && megaflows.contains("nd_target"), "{megaflows}");

    // A rewrite: echo requests to ::99 leave port 2 addressed to b, one hop less.
    let ghost = format!("{net}99");
    a.ip(&["-6", "neigh", "replace", &ghost, "lladdr", "02:00:00:00:00:99", "dev", &va.inner]).expect("neigh");
    sw.ctl(&[
        "add-flow",
        &format!(
            "priority=300,ipv6,ipv6_dst={ghost} actions=mod_dl_dst:{},set_field:{ip_b}->ipv6_dst,dec_ttl,output:2",
            vb.inner_mac
        ),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = dir.path().join("b6.pcap");
    let pkts = capture(&b, &vb.inner, &format!("icmp6 and ip6[40] == 128 and dst host {ip_b}"), &cap, || {
        ping6(&a, &ghost, 2);
    });
    assert!(!pkts.is_empty(), "no rewritten echo request seen on b's link");
    let want_b: std::net::Ipv6Addr = ip_b.parse().expect("address");
    for p in &pkts {
        let (k, lay) = kairo_wire::parse(p, 0);
        assert_eq!(k.get_wide(kairo_flow::Field::Ipv6DstHi), u128::from(want_b));
        assert_eq!(k.get(kairo_flow::Field::IpTtl), 63, "hop limit 64 less one");
        // The ICMPv6 checksum from scratch: pseudo-header and message.
        let (l3, l4) = (lay.l3.expect("l3"), lay.l4.expect("l4"));
        let plen = u16::from_be_bytes([p[l3 + 4], p[l3 + 5]]) as usize;
        let mut all = p[l3 + 8..l3 + 40].to_vec();
        all.extend_from_slice(&(plen as u32).to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, 58]);
        all.extend_from_slice(&p[l4..l3 + 40 + plen]);
        assert_eq!(kairo_wire::checksum(&all), 0, "ICMPv6 checksum after the rewrite");
    }
    drop(sw);
    drop((va, vb));
}

/// A port's link going down and up reaches an OpenFlow controller as
/// PORT_STATUS (reason modify, OFPPS_LINK_DOWN set, then clear).
#[test]
fn link_changes_reach_the_controller_as_port_status() {
    use kairo_ofp::message::{ofppr, OFPPS_LINK_DOWN};
    use kairo_ofp::{Message, Version};
    use kairo_switch::openflow::client::Client;
    use kairo_switch::openflow::Target;
    if skip("link_changes_reach_the_controller_as_port_status") {
        return;
    }
    let (t, va, vb) = topo("l");
    let dir = tempfile::tempdir().expect("tempdir");
    let of = dir.path().join("of.sock");
    let sw = SwitchProc::start(
        &[
            "--port".into(),
            format!("{}=1", va.outer),
            "--port".into(),
            format!("{}=2", vb.outer),
            "--openflow".into(),
            format!("punix:{}", of.display()),
        ],
        "actions=drop\n",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match Client::connect(&Target::ActiveUnix(of.clone()), Version::V1_3) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("connect to {}: {e}", of.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    c.call(&[]).expect("barrier");
    // The next port status for port 2 (bounded by the client's read timeout).
    let next_status = |c: &mut Client| loop {
        match c.recv().expect("a message within the read timeout") {
            Message::PortStatus { reason, desc } if desc.port_no == 2 => return (reason, desc.state),
            Message::EchoRequest(d) => {
                let _ = c.send(&Message::EchoReply(d));
            }
            _ => {}
        }
    };
    t.b.ip(&["link", "set", &vb.inner, "down"]).expect("link down");
    assert_eq!(next_status(&mut c), (ofppr::MODIFY, OFPPS_LINK_DOWN));
    t.b.ip(&["link", "set", &vb.inner, "up"]).expect("link up");
    assert_eq!(next_status(&mut c), (ofppr::MODIFY, 0));
    drop(c);
    drop(sw);
    drop((va, vb));
}

#[test]
fn ping_drop_rule_l3_flows_and_rewrites_through_the_switch() {
    if skip("ping_drop_rule_l3_flows_and_rewrites_through_the_switch") {
        return;
    }
    let (t, va, vb) = topo("e");
    let sw = SwitchProc::start(
        &["--port".into(), format!("{}=1", va.outer), "--port".into(), format!("{}=2", vb.outer)],
        "in_port=1 actions=output:2\nin_port=2 actions=output:1\n",
    );
    let (ip_a, ip_b) = (format!("{}.1", t.net), format!("{}.2", t.net));

    // L2 flows: ping works.
    assert!(ping(&t.a, &ip_b, 3), "ping over L2 flows");

    // A higher-priority drop rule: the very next echo request is dropped, by that rule.
    sw.ctl(&["add-flow", "priority=40000,icmp,icmp_type=8 actions=drop"]);
    assert!(!ping(&t.a, &ip_b, 1), "ping passed a drop rule");
    let dump = sw.ctl(&["dump-flows"]);
    assert_eq!(
        n_packets(&dump, "priority=40000"),
        1,
        "the echo request after the reply must hit the drop rule\n{dump}"
    );

    // Deleted: ping works again.
    sw.ctl(&["del-flows", "--strict", "priority=40000,icmp,icmp_type=8"]);
    assert!(ping(&t.a, &ip_b, 2), "ping after deleting the drop rule");

    // L3 flows (ARP by target address, IPv4 by destination), loaded as a file.
    sw.ctl(&["del-flows"]);
    let l3 = format!(
        "arp,arp_tpa={ip_b} actions=output:2\narp,arp_tpa={ip_a} actions=output:1\nip,nw_dst={ip_b} actions=output:2\nip,nw_dst={ip_a} actions=output:1\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let l3_file = dir.path().join("l3.flows");
    std::fs::write(&l3_file, l3).expect("write");
    sw.ctl(&["add-flows", l3_file.to_str().expect("utf-8 path")]);
    t.a.ip(&["neigh", "flush", "all"]).expect("flush");
    t.b.ip(&["neigh", "flush", "all"]).expect("flush");
    assert!(ping(&t.a, &ip_b, 3), "ping over L3 flows");
    assert!(sw.ctl(&["dump-megaflows"]).contains("arp"), "ARP went through the datapath");

    // A rewrite: echo requests to .99 leave port 2 addressed to b (MAC and IP).
    t.a.ip(&["neigh", "replace", &format!("{}.99", t.net), "lladdr", "02:00:00:00:00:99", "dev", &va.inner])
        .expect("neigh");
    sw.ctl(&[
        "add-flow",
        &format!("priority=300,ip,nw_dst={}.99 actions=mod_dl_dst:{},mod_nw_dst:{ip_b},output:2", t.net, vb.inner_mac),
    ]);
    let cap = dir.path().join("b.pcap");
    let pkts = capture(&t.b, &vb.inner, &format!("icmp and dst host {ip_b}"), &cap, || {
        ping(&t.a, &format!("{}.99", t.net), 2);
    });
    assert!(!pkts.is_empty(), "no rewritten packet seen on b's link");
    for p in &pkts {
        let (k, lay) = kairo_wire::parse(p, 0);
        assert_eq!(kairo_flow::parse::format_mac(k.get(kairo_flow::Field::EthDst)), vb.inner_mac);
        assert_eq!(kairo_flow::parse::format_ipv4(k.get(kairo_flow::Field::IpDst)), ip_b);
        assert_eq!(kairo_flow::parse::format_ipv4(k.get(kairo_flow::Field::IpSrc)), ip_a);
        let l3 = lay.l3.expect("ipv4");
        assert_eq!(kairo_wire::checksum(&p[l3..l3 + 20]), 0, "IPv4 header checksum after the rewrite");
    }
    drop(sw);
    drop((va, vb));
}

/// Captures with tcpdump in `ns` on `dev` while `traffic` runs; returns the frames.
fn capture(ns: &Netns, dev: &str, filter: &str, file: &Path, traffic: impl FnOnce()) -> Vec<Vec<u8>> {
    let mut td = ns
        .cmd("tcpdump")
        .args(["-i", dev, "-U", "-n", "-c", "2", "-w"])
        .arg(file)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    // tcpdump writes the file header once it is capturing.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(file).map_or(true, |m| m.len() < 24) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    traffic();
    let deadline = Instant::now() + Duration::from_secs(3);
    while td.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = td.kill();
    let _ = td.wait();
    let Ok(f) = std::fs::File::open(file) else { return Vec::new() };
    let Ok(mut r) = pcap_file::pcap::PcapReader::new(f) else { return Vec::new() };
    let mut out = Vec::new();
    while let Some(Ok(p)) = r.next_packet() {
        out.push(p.data.into_owned());
    }
    out
}

#[test]
fn tap_and_veth_ports_forward_both_ways() {
    if skip("tap_and_veth_ports_forward_both_ways") {
        return;
    }
    let pid = std::process::id() % 100_000;
    let net = format!("10.{}.{}", 200 + pid % 50, (pid / 100) % 250);
    let a = Netns::new(&format!("kairo-t{pid}a")).expect("netns");
    let b = Netns::new(&format!("kairo-t{pid}b")).expect("netns");
    let vb = Veth::new(&format!("kt{pid}b"), &format!("kt{pid}bi"), &b, Some(&format!("{net}.2/24"))).expect("veth");
    let tap = format!("kt{pid}tap");
    let sw = SwitchProc::start(
        &["--tap".into(), format!("{tap}=1"), "--port".into(), format!("{}=2", vb.outer)],
        "in_port=1 actions=output:2\nin_port=2 actions=output:1\n",
    );
    // The switch holds the TAP open; move the device into namespace a and address it there.
    run(&["ip", "link", "set", &tap, "netns", &a.name]).expect("move tap");
    a.ip(&["addr", "add", &format!("{net}.1/24"), "dev", &tap]).expect("addr");
    a.ip(&["link", "set", &tap, "up"]).expect("up");
    assert!(ping(&a, &format!("{net}.2"), 3), "ping from the TAP side");
    assert!(ping(&b, &format!("{net}.1"), 3), "ping from the veth side");
    // TCP with the TAP's and the veth's default offloads, both ways.
    transfer(&a, &b, (&format!("{net}.2"), 7100), 7100, 16);
    transfer(&b, &a, (&format!("{net}.1"), 7101), 7101, 16);
    let show = sw.ctl(&["show"]);
    assert!(show.contains(&format!(" 1({tap}): tap")) && show.contains(": afpacket"), "{show}");
    drop(sw);
}

/// Turns off checksum and segmentation offloads on a link (in `ns`, or
/// the switch's side when None): the kernel then finishes in software
/// what a frame sent there owes, from the partial checksum kairo left.
fn offloads_off(ns: Option<&Netns>, dev: &str) {
    let args = ["-K", dev, "tx", "off", "rx", "off", "gso", "off", "tso", "off"];
    let out = match ns {
        Some(ns) => ns.cmd("ethtool").args(args).output(),
        None => Command::new("ethtool").args(args).output(),
    };
    assert!(out.as_ref().is_ok_and(|o| o.status.success()), "ethtool -K {dev}: {out:?}");
}

/// Sends `mb` megabytes over one TCP connection from `from` to `dst:port`,
/// served in `to` on port `listen`, and checks that what arrived is what
/// was sent (byte count and SHA-256).
fn transfer(from: &Netns, to: &Netns, (dst, port): (&str, u16), listen: u16, mb: usize) {
    let mut server = Py::start(
        to,
        &format!(
            r#"
import socket, hashlib
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {listen})); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); c.settimeout(20); h = hashlib.sha256(); n = 0
while True:
    d = c.recv(1 << 20)
    if not d: break
    h.update(d); n += len(d)
print(n, h.hexdigest(), flush=True)
"#
        ),
    );
    let out = server.0.stdout.take().expect("piped stdout");
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out).lines().map_while(Result::ok).collect::<Vec<_>>()
    });
    // The server says ready on its first line: wait for the port to listen.
    std::thread::sleep(Duration::from_millis(300));
    let sent = py_client(
        from,
        &format!(
            r#"
import socket, hashlib
data = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20)); h = hashlib.sha256()
s = socket.create_connection(("{dst}", {port}), timeout=10)
for _ in range({mb}):
    s.sendall(data); h.update(data)
s.close(); print({mb} << 20, h.hexdigest())
"#
        ),
    );
    let got = kairo_testkit::within(20, move || lines.join()).and_then(|r| r.ok()).unwrap_or_default();
    drop(server);
    assert_eq!(got.get(1).map(String::as_str), Some(sent.trim()), "TCP transfer {dst}:{port}: server said {got:?}");
}

/// Replaces the switch's flows with `flows`.
fn replace_flows(sw: &SwitchProc, flows: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("replace.flows");
    std::fs::write(&file, flows).expect("write");
    sw.ctl(&["del-flows"]);
    sw.ctl(&["add-flows", file.to_str().expect("utf-8 path")]);
}

/// A static service address (as a load balancer's) in front of namespace
/// b's `backend` port: flows that rewrite a's connections to `VIP:80`
/// into b's address and `backend`, and b's answers back, plain forwarding
/// for the rest. Returns the service address (a knows its MAC).
fn service_rewrite(sw: &SwitchProc, t: &Topo, (va, vb): (&Veth, &Veth), backend: u16) -> String {
    let vip = format!("{}.80", t.net);
    let ip_b = format!("{}.2", t.net);
    t.a.ip(&["neigh", "replace", &vip, "lladdr", "02:00:00:00:00:80", "dev", &va.inner]).expect("neigh");
    let flows = format!(
        "priority=10,in_port=1,actions=output:2
priority=10,in_port=2,actions=output:1
priority=100,tcp,in_port=1,nw_dst={vip},tp_dst=80,actions=mod_dl_dst:{mac_b},mod_nw_dst:{ip_b},mod_tp_dst:{backend},output:2
priority=100,tcp,in_port=2,nw_src={ip_b},tp_src={backend},actions=mod_dl_src:02:00:00:00:00:80,mod_nw_src:{vip},mod_tp_src:80,output:1
",
        mac_b = vb.inner_mac
    );
    replace_flows(sw, &flows);
    vip
}

/// TCP through kairo with the veths' default offloads: the senders leave
/// checksums partial and hand over 64 KB super-frames, which kairo keeps
/// whole through lookup and rewrites. Where the links the switch sends on
/// finish them in software (their offloads off on kairo's side), the
/// receivers verify every checksum: a transfer through address and port
/// rewrites (a static service address, as a load balancer's) arrives
/// whole, and so does one with `ct` (which finishes checksums itself).
#[test]
fn tcp_with_default_offloads_through_rewrites_keeps_checksums_right() {
    if skip("tcp_with_default_offloads_through_rewrites_keeps_checksums_right") {
        return;
    }
    let (t, va, vb) = topo("o");
    let (ip_a, ip_b) = (format!("{}.1", t.net), format!("{}.2", t.net));
    let sw = SwitchProc::start(
        &["--port".into(), format!("{}=1", va.outer), "--port".into(), format!("{}=2", vb.outer)],
        "in_port=1 actions=output:2\nin_port=2 actions=output:1\n",
    );
    // Plain forwarding, both ways, offloads on everywhere.
    transfer(&t.a, &t.b, (&ip_b, 7200), 7200, 32);
    transfer(&t.b, &t.a, (&ip_a, 7201), 7201, 32);

    // From here the switch's side of both links finishes checksums and
    // segments in software: a wrong partial checksum becomes a wrong
    // checksum, which the receiving stack drops.
    offloads_off(None, &va.outer);
    offloads_off(None, &vb.outer);
    let vip = service_rewrite(&sw, &t, (&va, &vb), 7300);
    transfer(&t.a, &t.b, (&vip, 80), 7300, 32);
    let dump = sw.ctl(&["dump-flows"]);
    assert!(n_packets(&dump, "set_field:7300->tp_dst") > 0, "the transfer went through the rewrite\n{dump}");

    // Through conntrack (which finishes the checksum; super-frames keep
    // going out as super-frames).
    let ct = "table=0,priority=100,arp,actions=FLOOD
table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=3)
table=1,priority=100,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=3),output:2
table=1,priority=100,ip,ct_state=+trk+est,in_port=1,actions=output:2
table=1,priority=100,ip,ct_state=+trk+est,in_port=2,actions=output:1
table=1,priority=0,actions=drop
";
    replace_flows(&sw, ct);
    transfer(&t.a, &t.b, (&ip_b, 7301), 7301, 32);
    let stats = sw.ctl(&["stats"]);
    assert!(stats.contains("dropped for a bad offload header: 0"), "{stats}");
    drop(sw);
    drop((va, vb));
}

/// A Python program run in a namespace, killed on drop.
struct Py(Child);

impl Py {
    fn start(ns: &Netns, program: &str) -> Py {
        Py(ns.cmd("python3").args(["-c", program]).stdout(Stdio::piped()).spawn().expect("python3"))
    }
}

impl Py {
    /// Waits (at most 10 s) for the program's first line (a server says
    /// `ready` once it listens).
    fn wait_ready(&mut self) {
        use std::io::BufRead;
        let out = self.0.stdout.take().expect("piped stdout");
        let line = kairo_testkit::within(10, move || {
            let mut r = std::io::BufReader::new(out);
            let mut l = String::new();
            let _ = r.read_line(&mut l);
            l
        });
        assert_eq!(line.as_deref().map(str::trim), Some("ready"), "the server did not start in 10 s");
    }

    /// Its stdout once it exits (waiting at most `secs`, then killed).
    fn output(mut self, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let mut out = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            use std::io::Read;
            let _ = o.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server that answers every TCP connection and UDP datagram on `port`
/// with `name` and what it got.
fn echo_server(ns: &Netns, addr: &str, port: u16, name: &str) -> Py {
    let prog = format!(
        r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{addr}", {port})); s.listen(16)
def tcp():
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        def serve(c):
            while True:
                d = c.recv(100)
                if not d: break
                c.sendall(b"{name}:" + d)
            c.close()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("{addr}", {port}))
def udp():
    while True:
        d, a = u.recvfrom(100); u.sendto(b"{name}:" + d, a)
threading.Thread(target=udp, daemon=True).start()
tcp()
"#
    );
    let mut py = Py::start(ns, &prog);
    py.wait_ready();
    py
}

/// Runs a Python client in `ns` (at most 20 s); its stdout.
fn py_client(ns: &Netns, program: &str) -> String {
    let out = kairo_testkit::within(20, {
        let mut c = ns.cmd("python3");
        c.args(["-c", program]);
        move || c.output()
    })
    .expect("client finished in 20 s")
    .expect("python3");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One TCP exchange and one UDP exchange with `dst:port` from `ns`: what
/// came back for each (`-` when nothing did).
fn exchange(ns: &Netns, dst: &str, port: u16) -> (String, String) {
    let out = py_client(
        ns,
        &format!(
            r#"
import socket
try:
    s = socket.create_connection(("{dst}", {port}), timeout=2); s.sendall(b"t"); print(s.recv(100).decode())
except Exception: print("-")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2); u.sendto(b"u", ("{dst}", {port}))
try: print(u.recvfrom(100)[0].decode())
except Exception: print("-")
"#
        ),
    );
    let mut lines = out.lines().map(str::to_string);
    (lines.next().unwrap_or_default(), lines.next().unwrap_or_default())
}

/// A stateful firewall in zone 1: new connections from port 1 are
/// committed and pass, replies of known connections pass both ways,
/// everything else is dropped; TCP, UDP and ping; `dump-conntrack` and
/// `flush-conntrack`; a connection open across a rule change that does not
/// touch it keeps working.
#[test]
fn conntrack_firewall_allows_new_from_one_side_and_established_back() {
    if skip("conntrack_firewall_allows_new_from_one_side_and_established_back") {
        return;
    }
    let (t, va, vb) = topo("f");
    let flows = "table=0,priority=100,arp,in_port=1,actions=output:2
table=0,priority=100,arp,in_port=2,actions=output:1
table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=1)
table=1,priority=100,ip,in_port=1,ct_state=+trk+new,actions=ct(commit,zone=1),output:2
table=1,priority=100,ip,in_port=1,ct_state=+trk+est,actions=output:2
table=1,priority=100,ip,in_port=2,ct_state=+trk+est,actions=output:1
table=1,priority=0,actions=drop
";
    let sw = SwitchProc::start(
        &["--port".into(), format!("{}=1", va.outer), "--port".into(), format!("{}=2", vb.outer)],
        flows,
    );
    let (ip_a, ip_b) = (format!("{}.1", t.net), format!("{}.2", t.net));
    let _server_b = echo_server(&t.b, &ip_b, 7000, "b");
    let _server_a = echo_server(&t.a, &ip_a, 7000, "a");

    assert!(ping(&t.a, &ip_b, 2), "ping from the allowed side");
    assert!(!ping(&t.b, &ip_a, 1), "ping from the other side must be dropped");
    assert_eq!(exchange(&t.a, &ip_b, 7000), ("b:t".to_string(), "b:u".to_string()), "TCP and UDP from a to b");
    assert_eq!(exchange(&t.b, &ip_a, 7000), ("-".to_string(), "-".to_string()), "TCP and UDP from b to a");

    let dump = sw.ctl(&["dump-conntrack", "zone=1"]);
    assert!(dump.contains("tcp,orig=(src=") && dump.contains("dport=7000") && dump.contains("zone=1"), "{dump}");
    assert!(dump.contains("udp,orig=(") && dump.contains("icmp,orig=("), "{dump}");
    let stats = sw.ctl(&["stats"]);
    assert!(stats.contains("conntrack:") && !stats.contains("conntrack: 0 connections"), "{stats}");

    // A connection open across a rule change that does not touch it.
    let long = Py::start(
        &t.a,
        &format!(
            r#"
import socket, sys, time
s = socket.create_connection(("{ip_b}", 7000), timeout=3)
for i in range(6):
    s.sendall(b"x"); print(s.recv(100).decode()); sys.stdout.flush(); time.sleep(0.5)
"#
        ),
    );
    std::thread::sleep(Duration::from_millis(700));
    sw.ctl(&["add-flow", "table=1,priority=200,ip,nw_dst=192.0.2.1,actions=drop"]);
    let out = long.output(10);
    assert_eq!(out.lines().filter(|l| *l == "b:x").count(), 6, "the open connection kept working:\n{out}");

    // Flushed: the table is empty, and a's next connection is new again and works.
    let flushed = sw.ctl(&["flush-conntrack", "zone=1"]);
    assert!(flushed.contains("connections flushed"), "{flushed}");
    assert_eq!(sw.ctl(&["dump-conntrack"]), "");
    assert_eq!(exchange(&t.a, &ip_b, 7000).0, "b:t", "TCP from a after a flush");
    drop(sw);
    drop((va, vb));
}

/// A DNAT service: connections to a virtual IP reach one of two endpoints
/// (`nat(dst=B-C:8080)`), replies come back from the virtual IP.
#[test]
fn conntrack_dnat_service_spreads_over_endpoints_and_replies_come_back_unnated() {
    if skip("conntrack_dnat_service_spreads_over_endpoints_and_replies_come_back_unnated") {
        return;
    }
    let (t, va, vb) = topo("d");
    let pid = std::process::id() % 100_000;
    let c = Netns::new(&format!("kairo-d{pid}c")).expect("netns c");
    let vc =
        Veth::new(&format!("kd{pid}c"), &format!("kd{pid}ci"), &c, Some(&format!("{}.3/24", t.net))).expect("veth c");
    let (ip_a, ip_b, ip_c, vip) =
        (format!("{}.1", t.net), format!("{}.2", t.net), format!("{}.3", t.net), format!("{}.100", t.net));
    t.a.ip(&["neigh", "replace", &vip, "lladdr", "02:00:00:00:01:00", "dev", &va.inner]).expect("neigh");
    let flows = format!(
        "table=0,priority=100,arp,actions=FLOOD
table=0,priority=10,ip,ct_state=-trk,actions=ct(table=1,zone=2,nat)
table=1,priority=100,tcp,ct_state=+trk+new,nw_dst={vip},tp_dst=80,actions=ct(commit,zone=2,nat(dst={ip_b}-{ip_c}:8080),table=2)
table=1,priority=50,ip,ct_state=+trk+new,actions=ct(commit,zone=2),goto_table:2
table=1,priority=50,ip,ct_state=+trk+est,actions=goto_table:2
table=1,priority=0,actions=drop
table=2,priority=100,ip,nw_dst={ip_a},actions=output:1
table=2,priority=100,ip,nw_dst={ip_b},actions=mod_dl_dst:{},output:2
table=2,priority=100,ip,nw_dst={ip_c},actions=mod_dl_dst:{},output:3
",
        vb.inner_mac, vc.inner_mac
    );
    let sw = SwitchProc::start(
        &[
            "--port".into(),
            format!("{}=1", va.outer),
            "--port".into(),
            format!("{}=2", vb.outer),
            "--port".into(),
            format!("{}=3", vc.outer),
        ],
        &flows,
    );
    let _sb = echo_server(&t.b, &ip_b, 8080, "b");
    let _sc = echo_server(&c, &ip_c, 8080, "c");
    let out = py_client(
        &t.a,
        &format!(
            r#"
import socket
for i in range(16):
    try:
        s = socket.create_connection(("{vip}", 80), timeout=2); s.sendall(b"q")
        print(s.recv(100).decode(), s.getpeername()[0]); s.close()
    except Exception as e: print("-", e)
"#
        ),
    );
    let answers: Vec<&str> = out.lines().collect();
    assert_eq!(answers.len(), 16, "{out}");
    for a in &answers {
        assert!(
            a.ends_with(&vip) && (a.starts_with("b:q") || a.starts_with("c:q")),
            "every connection answered from the VIP:\n{out}"
        );
    }
    assert!(
        answers.iter().any(|a| a.starts_with("b:")) && answers.iter().any(|a| a.starts_with("c:")),
        "both endpoints used:\n{out}"
    );
    let dump = sw.ctl(&["dump-conntrack", "zone=2"]);
    assert!(dump.contains(&format!("dst={vip},sport=")) && dump.contains("sport=8080"), "{dump}");
    drop(sw);
    drop((va, vb, vc));
    drop(c);
}

/// Runs `kairo bench switch` with `args`, checks it succeeded: its table
/// and its JSON report.
fn bench_switch(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let out = Command::new(kairo())
        .args(["bench", "switch"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run kairo bench switch");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let r = serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("parse");
    (text, r)
}

/// `kairo bench switch` searches kairo's sustained rate: present for
/// kairo's row only, the whole offer where kairo dropped nothing in the
/// full-rate run, else a paced rate below it.
#[test]
fn bench_switch_reports_the_rate_kairo_sustains() {
    if skip("bench_switch_reports_the_rate_kairo_sustains") {
        return;
    }
    let (text, r) =
        bench_switch(&["--secs", "1", "--pmd-threads", "1", "--port-types", "afpacket", "--sustained-trials", "3"]);
    for row in r["rows"].as_array().expect("rows") {
        let name = row["forwarder"].as_str().unwrap_or("");
        let sustained = row["sustained_pps"].as_f64();
        if !name.starts_with("kairo") {
            assert!(sustained.is_none(), "{name} has no sustained rate: {text}");
            continue;
        }
        let (sustained, offered) =
            (sustained.expect("kairo's sustained rate"), row["offered_pps"].as_f64().unwrap_or(0.0));
        assert!(sustained >= 0.0 && sustained <= offered, "{name}: sustained {sustained} of {offered} offered: {text}");
        // Dropping nothing at full rate, the full offer; else a paced rate below it.
        match row["forwarder_dropped"].as_u64() {
            Some(0) => assert_eq!(sustained, offered, "{text}"),
            _ => assert!(sustained < offered, "{name}: dropped at full rate yet sustained it: {text}"),
        }
    }
    assert!(text.contains("sustained pps"), "{text}");
}

/// `kairo bench switch --conntrack`: every forwarder that runs (kairo on
/// AF_PACKET and AF_XDP ports, and Open vSwitch's userspace datapath where
/// it is installed) sets up connections through its tracker, and the bench
/// itself checks the tracker holds what arrived.
#[test]
fn bench_switch_sets_up_connections_beside_open_vswitch() {
    if skip("bench_switch_sets_up_connections_beside_open_vswitch") {
        return;
    }
    let (text, r) = bench_switch(&["--secs", "1", "--conntrack", "--flows", "20k"]);
    let rows = r["rows"].as_array().expect("rows");
    let received = |name: &str| {
        rows.iter()
            .find(|row| row["forwarder"].as_str().is_some_and(|f| f.starts_with(name)))
            .map(|row| row["received"].as_u64().unwrap_or(0))
    };
    assert!(received("kairo switch, AF_PACKET").is_some_and(|n| n > 1000), "{text}");
    // On XDP sockets too (a note says why where the kernel refuses them).
    match kairo_switch::xdp::unavailable() {
        None => assert!(received("kairo switch, AF_XDP").is_some_and(|n| n > 1000), "{text}"),
        Some(_) => assert!(text.contains("kairo switch, AF_XDP") && text.contains("no row"), "{text}"),
    }
    let ovs_installed = Command::new("ovs-vswitchd").arg("--version").output().is_ok_and(|o| o.status.success());
    if ovs_installed {
        assert!(received("Open vSwitch").is_some_and(|n| n > 1000), "{text}");
    } else {
        assert!(text.contains("Open vSwitch: not installed"), "{text}");
    }
    assert!(!rows.iter().any(|row| row["forwarder"] == "Linux bridge"), "no bridge row in the conntrack mode: {text}");
}

/// Runs `ip ARGS` in `ns`; panics with its error if it fails.
fn ip_in(ns: &Netns, args: &[&str]) {
    let out = ns.ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Four hosts for a learning switch: a and b (from `topo`), c on a third
/// port with a's and b's subnet, and d on a fourth without an address yet
/// (where c's MAC and address move to).
struct FourHosts {
    // Drop order: links, then namespaces (the switch is the caller's).
    vc: Veth,
    vd: Veth,
    c: Netns,
    d: Netns,
    va: Veth,
    vb: Veth,
    t: Topo,
    cin: String,
    din: String,
}

impl FourHosts {
    fn new(tag: &str) -> FourHosts {
        let (t, va, vb) = topo(tag);
        let pid = std::process::id() % 100_000;
        let c = Netns::new(&format!("kairo-{tag}{pid}c")).expect("netns c");
        let d = Netns::new(&format!("kairo-{tag}{pid}d")).expect("netns d");
        let (cin, din) = (format!("k{tag}{pid}ci"), format!("k{tag}{pid}di"));
        let vc = Veth::new(&format!("k{tag}{pid}c"), &cin, &c, Some(&format!("{}.3/24", t.net))).expect("veth c");
        let vd = Veth::new(&format!("k{tag}{pid}d"), &din, &d, None).expect("veth d");
        FourHosts { vc, vd, c, d, va, vb, t, cin, din }
    }

    /// `--port` arguments: a, b, c, d on ports 1 to 4.
    fn ports(&self) -> Vec<String> {
        [(&self.va, 1), (&self.vb, 2), (&self.vc, 3), (&self.vd, 4)]
            .iter()
            .flat_map(|(v, n)| ["--port".to_string(), format!("{}={n}", v.outer)])
            .collect()
    }

    /// Pings between the pairs go through the switch; then `learned(mac,
    /// port)` holds for a, b and c; c's MAC and address move to d (c's
    /// link goes down), d speaks and is spoken to, and `learned` holds for
    /// c's MAC on port 4.
    fn learn_and_move(&self, what: &str, learned: impl Fn(&str, u32) -> bool) {
        let (t, net) = (&self.t, &self.t.net);
        for (ns, dst) in [(&t.a, ".2"), (&t.a, ".3"), (&t.b, ".3"), (&t.b, ".1"), (&self.c, ".1")] {
            assert!(ping(ns, &format!("{net}{dst}"), 3), "ping to {net}{dst} through {what}");
        }
        let mc = self.vc.inner_mac.clone();
        for (port, mac) in [(1, &self.va.inner_mac), (2, &self.vb.inner_mac), (3, &mc)] {
            assert!(learned(mac, port), "{what}: {mac} learned on port {port}");
        }
        ip_in(&self.c, &["link", "set", "dev", &self.cin, "down"]);
        ip_in(&self.d, &["link", "set", "dev", &self.din, "address", &mc]);
        ip_in(&self.d, &["addr", "add", &format!("{net}.3/24"), "dev", &self.din]);
        ip_in(&self.d, &["link", "set", "dev", &self.din, "up"]);
        // d speaks (a ping to a): the switch learns the MAC on port 4, and
        // a's traffic to it (a still has it in its ARP cache) goes there.
        assert!(ping(&self.d, &format!("{net}.1"), 3), "{what}: ping from the moved host");
        assert!(ping(&t.a, &format!("{net}.3"), 3), "{what}: ping to the moved host");
        assert!(learned(&mc, 4), "{what}: {mc} moved to port 4");
    }
}

/// NORMAL as a learning switch between four namespaces: every pair pings
/// (flooded until learned, then to the learned port), `kairo ctl fdb-show`
/// lists where each MAC is, and when a host's MAC and address move to
/// another port (its old link down), traffic to it follows once it speaks
/// from there.
#[test]
fn normal_learns_macs_and_follows_a_mac_that_moves() {
    if skip("normal_learns_macs_and_follows_a_mac_that_moves") {
        return;
    }
    let h = FourHosts::new("n");
    let sw = SwitchProc::start(&h.ports(), "actions=NORMAL\n");
    h.learn_and_move("NORMAL", |mac, port| {
        let fdb = sw.ctl(&["fdb-show"]);
        fdb.lines().any(|l| l.split_whitespace().next() == Some(&port.to_string()) && l.contains(mac))
    });
    // A flush forgets every MAC; traffic floods until they are learned again.
    sw.ctl(&["fdb-flush"]);
    assert!(ping(&h.t.b, &format!("{}.3", h.t.net), 2), "ping after a flush");
    drop(sw);
}

/// The learning switch made of `learn` instead of NORMAL: each frame's
/// source MAC becomes a flow in table 1 that loads its port, and frames to
/// a MAC without one flood. Pings between all pairs go through; the flows
/// learned are there (`kairo ctl dump-flows`); a MAC that moves to another
/// port is learned again there and traffic follows it.
#[test]
fn a_learn_pipeline_learns_macs_and_follows_a_mac_that_moves() {
    if skip("a_learn_pipeline_learns_macs_and_follows_a_mac_that_moves") {
        return;
    }
    let h = FourHosts::new("l");
    let flows =
        "table=0,priority=10,actions=learn(table=1,idle_timeout=120,cookie=0x1,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],\
                 load:NXM_OF_IN_PORT[]->NXM_NX_REG0[0..15]),resubmit(,1),resubmit(,2)\n\
                 table=2,priority=10,reg0=0,actions=FLOOD\n\
                 table=2,priority=5,actions=output:NXM_NX_REG0[0..15]\n";
    let sw = SwitchProc::start(&h.ports(), flows);
    h.learn_and_move("the learn pipeline", |mac, port| {
        let dump = sw.ctl(&["dump-flows", "table=1"]);
        dump.lines()
            .any(|l| l.contains(&format!("dl_dst={mac}")) && l.contains(&format!("load:{port:#x}->reg0[0..15]")))
    });
    drop(sw);
}

/// AF_XDP ports: an XDP program on each link hands its frames to kairo's
/// XDP sockets. Ping and TCP with the veths' default offloads both ways
/// (the senders' partial checksums arrive unmarked and are recognised),
/// through address and port rewrites whose checksums the receivers verify,
/// then with one port moved to AF_PACKET at run time (partial checksums
/// crossing between the two kinds); a removed port leaves no program on
/// its link.
#[test]
fn afxdp_ports_forward_tcp_with_default_offloads_and_rewrites() {
    if skip("afxdp_ports_forward_tcp_with_default_offloads_and_rewrites") {
        return;
    }
    if let Some(why) = kairo_switch::xdp::unavailable() {
        assert!(
            !std::env::var("KAIRO_REQUIRE_NETNS").is_ok_and(|v| v == "1"),
            "afxdp test: KAIRO_REQUIRE_NETNS=1 but {why}"
        );
        eprintln!("SKIPPED afxdp_ports_forward_tcp_with_default_offloads_and_rewrites: {why}");
        return;
    }
    let (t, va, vb) = topo("x");
    let (ip_a, ip_b) = (format!("{}.1", t.net), format!("{}.2", t.net));
    let sw = SwitchProc::start(
        &["--port".into(), format!("{}=1,type=afxdp", va.outer), "--port".into(), format!("{}=2,type=afxdp", vb.outer)],
        "in_port=1 actions=output:2\nin_port=2 actions=output:1\n",
    );
    let show = sw.ctl(&["show"]);
    assert!(show.contains(&format!(" 1({}): afxdp (", va.outer)) && show.contains(" XDP, "), "{show}");
    let xdp_on = |dev: &str| {
        let out = run(&["ip", "link", "show", "dev", dev]).expect("ip link show");
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    };
    assert!(xdp_on(&va.outer) && xdp_on(&vb.outer), "kairo's XDP program is on both links");
    assert!(ping(&t.a, &ip_b, 3), "ping a -> b over AF_XDP ports");
    assert!(ping(&t.b, &ip_a, 3), "ping b -> a over AF_XDP ports");
    transfer(&t.a, &t.b, (&ip_b, 7400), 7400, 16);
    transfer(&t.b, &t.a, (&ip_a, 7401), 7401, 16);

    // A service address rewritten both ways: the checksums kairo finishes
    // on the way out must be right after the rewrite.
    let vip = service_rewrite(&sw, &t, (&va, &vb), 7402);
    transfer(&t.a, &t.b, (&vip, 80), 7402, 16);
    let dump = sw.ctl(&["dump-flows"]);
    assert!(n_packets(&dump, "set_field:7402->tp_dst") > 0, "the transfer went through the rewrite\n{dump}");

    // Port 2 moves to AF_PACKET: partial checksums from the XDP side go out
    // with a virtio header, super-frames from the AF_PACKET side are cut
    // for the XDP side.
    sw.ctl(&["del-port", "2"]);
    assert!(!xdp_on(&vb.outer), "a removed AF_XDP port leaves no program on its link");
    sw.ctl(&["add-port", &format!("{}=2", vb.outer), "type=afpacket"]);
    transfer(&t.a, &t.b, (&vip, 80), 7402, 16);
    transfer(&t.b, &t.a, (&ip_a, 7403), 7403, 16);
    let stats = sw.ctl(&["stats"]);
    assert!(stats.contains("dropped for a bad offload header: 0"), "{stats}");
    let show = sw.ctl(&["show"]);
    assert!(show.contains(&format!(" 2({}): afpacket", vb.outer)), "{show}");
    drop(sw);
    assert!(!xdp_on(&va.outer), "the switch's XDP program leaves with it");
    drop((va, vb));
}

//! The `kairo` command line: replay end to end, and bad input to replay,
//! switch and ctl ending with a message that names the problem (exit 2).

use std::path::Path;
use std::process::Command;

use kairo_flow::{Field, FlowKey};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

fn kairo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kairo")).args(args).output().expect("run kairo");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn key(dst: u32, tp_dst: u16) -> FlowKey {
    FlowKey::ipv4(0, 0x0200_0000_0001, 0x0200_0000_0002, 0x0a00_0001, dst, 6)
        .with(Field::TpSrc, 40000)
        .with(Field::TpDst, tp_dst as u64)
}

fn read_pcap(p: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(p).expect("open pcap")).expect("pcap header");
    let mut out = Vec::new();
    while let Some(pkt) = r.next_packet() {
        out.push(pkt.expect("packet").data.into_owned());
    }
    out
}

#[test]
fn replay_writes_what_each_port_sends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("p.flows");
    std::fs::write(
        &flows,
        "table=0,priority=10,tcp,tp_dst=80 actions=mod_nw_dst:10.0.0.9,output:2\n\
         table=0,priority=10,tcp,tp_dst=22 actions=output:3,output:2\n\
         table=0,priority=0 actions=drop\n",
    )
    .unwrap();
    let input = dir.path().join("in.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&input).unwrap()).unwrap();
    let frames: Vec<Vec<u8>> =
        [(0x0a00_0002, 80), (0x0a00_0003, 80), (0x0a00_0002, 22), (0x0a00_0002, 443), (0x0a00_0002, 80)]
            .iter()
            .map(|&(d, p)| kairo_wire::emit::frame(&key(d, p), b"payload"))
            .collect();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(std::time::Duration::from_millis(i as u64), f.len() as u32, f)).unwrap();
    }
    drop(w);
    let out = dir.path().join("out");
    let json = dir.path().join("r.json");
    let args = [
        "replay",
        "--flows",
        flows.to_str().unwrap(),
        "--input",
        &format!("{}=1", input.display()),
        "--out",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = kairo(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("packets in: 5") && stdout.contains("dropped (no output): 1"), "{stdout}");
    let p2 = read_pcap(&out.join("port-2.pcap"));
    let p3 = read_pcap(&out.join("port-3.pcap"));
    assert_eq!(p2.len(), 4);
    assert_eq!(p2[0], p2[3], "the same input gives the same output");
    assert_eq!(p3.len(), 1);
    // The rewrite happened on the wire, checksums included.
    let (k, lay) = kairo_wire::parse(&p2[0], 2);
    assert_eq!(k.get(Field::IpDst), 0x0a00_0009);
    let l3 = lay.l3.unwrap();
    assert_eq!(kairo_wire::checksum(&p2[0][l3..l3 + 20]), 0);
    assert_eq!(p3[0], frames[2], "port 3 got the ssh frame unchanged");
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(rep["packets_in"], 5);
    // mod_nw_dst un-wildcards nw_dst (as in Open vSwitch): four distinct megaflows, then one hit.
    assert_eq!(rep["datapath"]["misses"], 4, "{rep}");
    assert_eq!(rep["datapath"]["megaflow_hits"], 1, "{rep}");
    // Deterministic: a second run writes the same bytes.
    let first = std::fs::read(out.join("port-2.pcap")).unwrap();
    assert!(kairo(&args).0);
    assert_eq!(std::fs::read(out.join("port-2.pcap")).unwrap(), first);
}

#[test]
fn replay_reads_ethernet_only_and_writes_frames_of_any_length() {
    use pcap_file::pcap::PcapHeader;
    use pcap_file::DataLink;
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("p.flows");
    std::fs::write(&flows, "actions=output:2\n").unwrap();
    let capture = |name: &str, link: DataLink, frames: &[Vec<u8>]| {
        let path = dir.path().join(name);
        let header = PcapHeader { snaplen: 262_144, datalink: link, ..PcapHeader::default() };
        let mut w = PcapWriter::with_header(std::fs::File::create(&path).unwrap(), header).unwrap();
        for f in frames {
            w.write_packet(&PcapPacket::new(std::time::Duration::ZERO, f.len() as u32, f)).unwrap();
        }
        path
    };
    // Raw IP (link type 101) is not read as Ethernet: refused before anything is written.
    let frame = kairo_wire::emit::frame(&key(0x0a00_0002, 80), b"x");
    let raw = capture("raw.pcap", DataLink::RAW, &[frame[14..].to_vec()]);
    let out = dir.path().join("out-raw");
    let (ok, _, err) = kairo(&[
        "replay",
        "--flows",
        flows.to_str().unwrap(),
        "--input",
        raw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("raw.pcap") && err.contains("link type 101"), "{err}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "wrote output for a refused capture");
    // A frame longer than 65,535 bytes goes through and is written whole.
    let big = kairo_wire::emit::frame(&key(0x0a00_0002, 80), &vec![7u8; 70_000]);
    let input = capture("big.pcap", DataLink::ETHERNET, std::slice::from_ref(&big));
    let out = dir.path().join("out-big");
    let (ok, _, err) = kairo(&[
        "replay",
        "--flows",
        flows.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let sent = read_pcap(&out.join("port-2.pcap"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].len(), big.len());
}

#[test]
fn bad_input_names_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("p.flows");
    std::fs::write(&flows, "actions=drop\n").unwrap();
    let bad = dir.path().join("bad.pcap");
    std::fs::write(&bad, b"this is not a capture").unwrap();
    let (ok, _, err) = kairo(&["replay", "--flows", flows.to_str().unwrap(), "--input", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("bad.pcap") && err.contains("not a pcap"), "{err}");
    let (ok, _, err) = kairo(&["replay", "--flows", flows.to_str().unwrap(), "--input", "x.pcap=0"]);
    assert!(!ok && err.contains("x.pcap=0"), "{err}");
    let sock = dir.path().join("none.sock");
    let (ok, _, err) = kairo(&["ctl", "--ctl", sock.to_str().unwrap(), "show"]);
    assert!(!ok && err.contains("none.sock"), "{err}");
    let (ok, _, err) = kairo(&["switch", "--ctl", sock.to_str().unwrap()]);
    assert!(!ok && err.contains("no ports"), "{err}");
    let (ok, _, err) = kairo(&["switch", "--ctl", sock.to_str().unwrap(), "--port", "kairo-nosuch0"]);
    assert!(!ok && err.contains("kairo-nosuch0") && err.contains("no such interface"), "{err}");
    let (ok, _, err) = kairo(&["switch", "--ctl", sock.to_str().unwrap(), "--port", "a=1", "--port", "b=1"]);
    assert!(!ok && err.contains("OpenFlow port 1 given twice"), "{err}");
    let (ok, _, err) = kairo(&["switch", "--ctl", sock.to_str().unwrap(), "--port", "a=0"]);
    assert!(!ok && err.contains("`0`"), "{err}");
    // A flow file that is not text: the line and byte where it stops being UTF-8.
    let binary = dir.path().join("binary.flows");
    std::fs::write(&binary, b"in_port=1 actions=drop\nin_port=2 \xff\xfe actions=drop\n").unwrap();
    let (ok, _, err) = kairo(&["trace", "--flows", binary.to_str().unwrap(), "in_port=1"]);
    assert!(!ok && err.contains("binary.flows: line 2, byte 11: not UTF-8"), "{err}");
    // Table 255 is not a table; the last table has no next one to continue to.
    std::fs::write(&flows, "#@ table=255 miss=continue\n").unwrap();
    let (ok, _, err) = kairo(&["trace", "--flows", flows.to_str().unwrap(), "in_port=1"]);
    assert!(!ok && err.contains("line 1") && err.contains("table=255") && err.contains("0-254"), "{err}");
    std::fs::write(&flows, "#@ table=254 miss=continue\n").unwrap();
    let (ok, _, err) = kairo(&["trace", "--flows", flows.to_str().unwrap(), "in_port=1"]);
    assert!(!ok && err.contains("table 254 is the last"), "{err}");
}

/// `--mlockall` locks the memory where nothing caps it (root), and
/// otherwise says why not and goes on: either way the command does its work.
#[test]
fn mlockall_locks_or_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("w");
    let (ok, _, err) = kairo(&[
        "--mlockall",
        "gen",
        "--pipeline",
        "ofdpa",
        "--flows",
        "100",
        "--updates",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.join("ofdpa.flows").exists() && out.join("ofdpa.updates").exists(), "gen wrote its files");
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert_eq!(err.contains("memory not locked"), !root, "root: {root}, stderr: {err}");
}

/// `kairo trace --port-config`: the bridge's ports by name, in flows,
/// groups and packets, as ovs-ofctl takes them against a running bridge;
/// FLOOD goes to the file's ports, less those set no-flood; an unknown
/// name and a port setting kairo does not model are errors naming the line.
#[test]
fn trace_takes_ports_by_name_from_a_port_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (flows, groups, ports) = (dir.path().join("f"), dir.path().join("g"), dir.path().join("p"));
    std::fs::write(&ports, "# the bridge\n1 antrea-tun0\n2 antrea-gw0\n5 pod1-7e503a   # a pod\nLOCAL br-int\n")
        .unwrap();
    std::fs::write(
        &flows,
        "in_port=\"pod1-7e503a\",ip,actions=group:1\nin_port=antrea-gw0,actions=output:pod1-7e503a\nactions=FLOOD\n",
    )
    .unwrap();
    std::fs::write(&groups, "group_id=1,type=ff,bucket=watch_port:antrea-tun0,actions=output:antrea-tun0\n").unwrap();
    let (f, g, p) = (flows.to_str().unwrap(), groups.to_str().unwrap(), ports.to_str().unwrap());
    let base = ["trace", "--flows", f, "--groups", g, "--port-config", p];
    let (ok, out, err) =
        kairo(&[&base[..], &["in_port=pod1-7e503a,ip", "in_port=2", "in_port=antrea-tun0,arp"]].concat());
    assert!(ok, "{err}");
    let dp: Vec<&str> = out.lines().filter(|l| l.starts_with("Datapath actions:")).collect();
    assert_eq!(dp, ["Datapath actions: 1", "Datapath actions: 5", "Datapath actions: 2,5,65534"], "{out}");
    let (ok, _, err) = kairo(&[&base[..], &["in_port=pod9,ip"]].concat());
    assert!(!ok && err.contains("pod9") && err.contains("antrea-gw0"), "{err}");
    // OpenFlow port-config words: FLOOD leaves out a no-flood port, ALL
    // does not, and nothing leaves by a no-forward one.
    std::fs::write(&ports, "1 antrea-tun0\n2 antrea-gw0 tag=10 no-flood\n3 p3\n4 p4 no-forward\n").unwrap();
    let floods = dir.path().join("floods");
    std::fs::write(&floods, "in_port=1,actions=FLOOD\nin_port=3,actions=ALL\n").unwrap();
    let fl = floods.to_str().unwrap();
    let (ok, out, err) = kairo(&["trace", "--flows", fl, "--port-config", p, "in_port=1", "in_port=3"]);
    assert!(ok, "{err}");
    let dp: Vec<&str> = out.lines().filter(|l| l.starts_with("Datapath actions:")).collect();
    assert_eq!(dp, ["Datapath actions: 3", "Datapath actions: 1,2"], "{out}");
    // no-packet-in changes no translation (as Open vSwitch's trace shows);
    // a word kairo does not know is an error naming the line.
    std::fs::write(&ports, "1 antrea-tun0\n2 antrea-gw0 no-packet-in\n5 pod1-7e503a\n").unwrap();
    let (ok, out, err) = kairo(&[&base[..], &["in_port=2"]].concat());
    assert!(ok && out.contains("Datapath actions: 5\n"), "{out}{err}");
    std::fs::write(&ports, "1 antrea-tun0\n2 antrea-gw0 no-stp\n").unwrap();
    let (ok, _, err) = kairo(&[&base[..], &["in_port=1"]].concat());
    assert!(!ok && err.contains("line 2") && err.contains("no-stp"), "{err}");
    std::fs::write(&ports, "1 antrea-tun0\n2 antrea-gw0 tag=4096\n").unwrap();
    let (ok, _, err) = kairo(&[&base[..], &["in_port=1"]].concat());
    assert!(!ok && err.contains("line 2") && err.contains("tag=4096") && err.contains("VLAN id"), "{err}");
    // Without the file a name is an error that says no names are known.
    let (ok, _, err) = kairo(&["trace", "--flows", f, "in_port=1"]);
    assert!(!ok && err.contains("pod1-7e503a") && err.contains("no port names"), "{err}");
}

/// `kairo trace` with NORMAL: the ports' VLAN settings from --port-config,
/// and MACs learned from --learn packets before the traced ones (as frames
/// sent through the bridge first would teach it).
#[test]
fn trace_runs_normal_with_port_settings_and_learned_macs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (flows, ports) = (dir.path().join("f"), dir.path().join("p"));
    std::fs::write(&flows, "actions=NORMAL\n").unwrap();
    std::fs::write(&ports, "1 vm1 tag=10\n2 uplink\n3 vm3 tag=10\n4 vm4 tag=20\n").unwrap();
    let (f, p) = (flows.to_str().unwrap(), ports.to_str().unwrap());
    let pkt = "in_port=vm1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:03";
    let (ok, out, err) = kairo(&["trace", "--flows", f, "--port-config", p, pkt]);
    assert!(ok, "{err}");
    assert!(out.contains("Datapath actions: push_vlan(vid=10,pcp=0),2,pop_vlan,3"), "{out}");
    let learn = "in_port=vm3,dl_src=02:00:00:00:00:03,dl_dst=02:00:00:00:00:01";
    let (ok, out, err) = kairo(&["trace", "--flows", f, "--port-config", p, "--learn", learn, pkt]);
    assert!(ok, "{err}");
    assert!(out.contains("Datapath actions: 3\n"), "{out}");
    let (ok, _, err) = kairo(&["trace", "--flows", f, "--port-config", p, "--learn", "in_port=bogus", pkt]);
    assert!(!ok && err.contains("bogus"), "{err}");
}

/// `kairo trace` of a learning pipeline: the trace shows the flow the
/// packet learns, and `--learn` packets put theirs in first.
#[test]
fn trace_shows_learned_flows_and_learn_packets_add_theirs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = dir.path().join("f");
    std::fs::write(
        &flows,
        "table=0,actions=learn(table=1,cookie=0x7,NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],output:NXM_OF_IN_PORT[]),resubmit(,1)\n\
         table=1,priority=0,actions=output:4\n",
    )
    .unwrap();
    let f = flows.to_str().unwrap();
    let pkt = "in_port=1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02";
    let (ok, out, err) = kairo(&["trace", "--flows", f, pkt]);
    assert!(ok, "{err}");
    assert!(
        out.contains("learned: table=1 dl_dst=02:00:00:00:00:01 priority=32768 cookie=0x7 actions=output:1"),
        "{out}"
    );
    assert!(out.contains("Datapath actions: 4\n"), "{out}");
    let learn = "in_port=2,dl_src=02:00:00:00:00:02,dl_dst=02:00:00:00:00:01";
    let (ok, out, err) = kairo(&["trace", "--flows", f, "--learn", learn, pkt]);
    assert!(ok, "{err}");
    assert!(out.contains("Datapath actions: 2\n"), "{out}");
}

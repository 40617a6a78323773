//! The control socket under careless and hostile clients: what is at the
//! socket's path, its permissions, too many clients, idle and slow ones,
//! too many buffered bytes, bytes that are not text. After each, the rules
//! are as they were and a well-behaved client is served.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::call;
use kairo_datapath::DpConfig;
use kairo_maintain::EngineKind;
use kairo_switch::ctl::{serve_with, Client, Limits};
use kairo_switch::{PortInfo, Switch};

fn switch() -> Arc<Switch> {
    let flows = kairo_ofproto::parse_flow_file("in_port=1 actions=output:2\n").expect("flows");
    let pipeline = kairo_xlate::Pipeline::from_parts(flows, Vec::new()).expect("pipeline");
    Arc::new(Switch::new(pipeline, EngineKind::Incremental, DpConfig::default(), Vec::<PortInfo>::new()))
}

/// A switch with no rules and two (unopened) ports, 1 `veth-a` and 2 `veth-b`.
fn two_port_switch() -> Switch {
    let ports: Vec<PortInfo> = [(1, "veth-a"), (2, "veth-b")]
        .into_iter()
        .map(|(ofport, name)| PortInfo {
            ofport,
            name: name.into(),
            kind: "afpacket",
            mode: None,
            counters: Default::default(),
        })
        .collect();
    Switch::new(kairo_xlate::Pipeline::new(), EngineKind::Incremental, DpConfig::default(), ports)
}

/// One reply line from a raw connection (empty if it closed without one).
fn reply_line(s: &UnixStream) -> String {
    let mut line = String::new();
    let _ = BufReader::new(s.try_clone().expect("clone")).read_line(&mut line);
    line
}

/// Whether the server closed the connection (reads end of file).
fn closed(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
}

#[test]
fn the_socket_is_owner_only_and_replaces_nothing_but_a_stale_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));

    // A regular file at the path: an error naming it, the file untouched.
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "precious").expect("write");
    let e = serve_with(switch(), &file, stop.clone(), Limits::default()).unwrap_err();
    assert!(e.to_string().contains("notes.txt") && e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "precious");
    // A directory: the same.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    assert!(serve_with(switch(), &sub, stop.clone(), Limits::default()).is_err());
    assert!(sub.is_dir());

    // Created srwxr-x--- whatever the umask (here 000, which would give srwxrwxrwx).
    let sock = dir.path().join("ctl.sock");
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let served = serve_with(switch(), &sock, stop.clone(), Limits::default());
    rustix::process::umask(old);
    let server = served.expect("serve");
    let meta = std::fs::symlink_metadata(&sock).expect("stat");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o750, "mode {:o}", meta.permissions().mode());

    // A live socket: an error, and the running switch keeps it.
    let e = serve_with(switch(), &sock, stop.clone(), Limits::default()).unwrap_err();
    assert!(e.to_string().contains("another switch"), "{e}");
    let mut c = Client::connect(&sock).expect("connect");
    assert!(call(&mut c, "dump-flows", &[]).expect("dump-flows").contains("in_port=1"));
    drop(c);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().expect("server thread");

    // A stale socket (nobody listening): replaced.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let stop2 = Arc::new(AtomicBool::new(false));
    let server = serve_with(switch(), &stale, stop2.clone(), Limits::default()).expect("replaces a stale socket");
    assert!(Client::connect(&stale).is_ok());
    stop2.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().expect("server thread");
}

#[test]
fn clients_are_bounded_and_the_others_keep_being_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("ctl.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let limits = Limits {
        clients: 4,
        request: 1 << 20,
        buffered: 1 << 20,
        idle: Duration::from_millis(600),
        // Long enough that the buffered-bytes part below finishes well
        // within it on a loaded machine.
        slow: Duration::from_secs(3),
    };
    let sw = switch();
    let server = serve_with(sw.clone(), &sock, stop.clone(), limits).expect("serve");
    let before = sw.handle(&kairo_switch::request::Request::DumpFlows { table: None }).expect("dump");

    // Bytes that are not UTF-8: an error saying so, then the connection closes.
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.write_all(b"\xff\xfe{\"cmd\":\"show\"}\n").expect("write");
    let line = reply_line(&s);
    assert!(line.contains("\"ok\":false") && line.contains("not UTF-8"), "{line}");
    assert!(closed(&mut s));
    // Bytes that are text but not a request: an error, and the connection goes on.
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.write_all(b"\x01\x02 garbage\n").expect("write");
    assert!(reply_line(&s).contains("malformed request"));
    s.write_all(b"{\"cmd\":\"show\"}\n").expect("write");
    assert!(reply_line(&s).contains("\"ok\":true"));
    // Closed on our side; once the switch has closed its side, the slot is free.
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(closed(&mut s));

    // Four idle clients fill the slots: a fifth is told and closed.
    let idle: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(&sock).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut fifth = UnixStream::connect(&sock).expect("connect");
    let line = reply_line(&fifth);
    assert!(line.contains("too many clients"), "{line}");
    assert!(closed(&mut fifth));
    // The idle ones are closed after the idle limit, which frees the slots.
    for mut s in idle {
        let line = reply_line(&s);
        assert!(line.contains("idle"), "{line}");
        assert!(closed(&mut s));
    }
    std::thread::sleep(Duration::from_millis(100));

    // A client that starts a request and never finishes it: closed after the slow limit.
    let mut slow = UnixStream::connect(&sock).expect("connect");
    slow.write_all(b"{\"cmd\":\"sh").expect("write");
    let line = reply_line(&slow);
    assert!(line.contains("not finished within"), "{line}");
    assert!(closed(&mut slow));

    // Two clients sending long unfinished lines: together over the buffered
    // bound, the one that crosses it is refused; the first keeps its bytes.
    let mut a = UnixStream::connect(&sock).expect("connect");
    let mut b = UnixStream::connect(&sock).expect("connect");
    a.write_all(&vec![b'x'; 700 << 10]).expect("write a");
    std::thread::sleep(Duration::from_millis(150));
    let _ = b.write_all(&vec![b'y'; 700 << 10]);
    let line = reply_line(&b);
    assert!(line.contains("unfinished requests"), "{line}");
    // A line over the per-request bound: refused. The switch may close the
    // connection before all of it is written (it stops reading at the
    // bound), so the write may fail with a broken pipe: the reply decides.
    let _ = a.write_all(&vec![b'x'; 400 << 10]);
    let line = reply_line(&a);
    assert!(line.contains("request longer than"), "{line}");
    drop((a, b));
    std::thread::sleep(Duration::from_millis(100));

    // Nothing changed, and a well-behaved client is served.
    let mut c = Client::connect(&sock).expect("connect");
    assert_eq!(call(&mut c, "dump-flows", &[]).expect("dump-flows"), before);
    call(&mut c, "add-flow", &["in_port=2 actions=output:1"]).expect("add-flow");
    drop(c);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().expect("server thread");
}

/// Flows sent to a running switch may give its ports by their interface
/// names (and ports added later by theirs), as ovs-ofctl does.
#[test]
fn flows_name_the_switch_s_ports() {
    let sw = two_port_switch();
    let req = |flow: &str| kairo_switch::ctl::Request::AddFlow { flow: flow.into() };
    sw.handle(&req("in_port=veth-a,actions=output:\"veth-b\"")).expect("names resolve");
    let dump = sw.handle(&kairo_switch::ctl::Request::DumpFlows { table: None }).expect("dump");
    assert!(dump.contains("in_port=1") && dump.contains("output:2"), "{dump}");
    let e = sw.handle(&req("in_port=veth-c,actions=drop")).unwrap_err();
    assert!(e.contains("veth-c") && e.contains("veth-a"), "{e}");
}

/// A port's VLAN settings for NORMAL set while the switch runs (by name or
/// number), shown by `show`; bad settings (and OpenFlow port-config bits,
/// which PORT_MOD sets) are refused naming them; the learned MACs are
/// listed and flushed.
#[test]
fn port_vlan_settings_and_the_mac_table_through_the_control_protocol() {
    use kairo_switch::ctl::Request;
    let sw = two_port_switch();
    let set = |port: &str, words: &[&str]| Request::SetPort {
        port: port.into(),
        settings: words.iter().map(|w| w.to_string()).collect(),
    };
    sw.handle(&set("veth-a", &["tag=10"])).expect("by name");
    sw.handle(&set("2", &["vlan_mode=native-untagged", "tag=20", "trunks=10,20"])).expect("by number");
    let show = sw.handle(&Request::Show {}).expect("show");
    assert!(show.contains("1(veth-a): afpacket, tag=10"), "{show}");
    assert!(show.contains("vlan_mode=native-untagged tag=20 trunks=10,20"), "{show}");
    let e = sw.handle(&set("veth-a", &["tag=5000"])).unwrap_err();
    assert!(e.contains("tag=5000"), "{e}");
    let e = sw.handle(&set("veth-z", &["tag=1"])).unwrap_err();
    assert!(e.contains("veth-z"), "{e}");
    // OpenFlow port-config bits are PORT_MOD's, not settings: refused, naming them.
    let e = sw.handle(&set("veth-a", &["tag=10", "no-flood"])).unwrap_err();
    assert!(e.contains("no-flood") && e.contains("PORT_MOD"), "{e}");
    assert!(sw.handle(&Request::Show {}).expect("show").contains("1(veth-a): afpacket, tag=10\n"));
    // Back to the default trunk.
    sw.handle(&set("veth-a", &[])).expect("cleared");
    assert!(sw.handle(&Request::Show {}).expect("show").contains("1(veth-a): afpacket\n"));
    assert!(sw.handle(&Request::FdbShow {}).expect("fdb-show").starts_with(" port  VLAN  MAC"));
    sw.handle(&Request::FdbFlush {}).expect("fdb-flush");
}

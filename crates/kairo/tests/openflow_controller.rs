//! A real controller drives kairo: an os-ken learning switch
//! (`tests/osken/learn.py`, OpenFlow 1.3) listens, `kairo switch --openflow
//! tcp:...` connects to it, and ping between two network namespaces works
//! through table-miss PACKET_INs, the controller's PACKET_OUTs and the flows
//! it installs; the flows' idle timeout reaches it as FLOW_REMOVED.
//!
//! Needs root, network namespaces, ping, and a Python with os-ken
//! (`KAIRO_OSKEN_PYTHON`, which `scripts/test.sh` sets up in a venv). Where
//! one is missing the test says SKIPPED and why, or fails when
//! KAIRO_REQUIRE_NETNS=1 / KAIRO_REQUIRE_OSKEN=1 say it must run (CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kairo_switch::netns::{Netns, Veth};

fn skip(test: &str) -> Option<String> {
    let required = |v: &str| std::env::var(v).is_ok_and(|x| x == "1");
    let why =
        kairo_switch::netns::unavailable().map(|w| (w, required("KAIRO_REQUIRE_NETNS"))).or_else(
            || match std::env::var("KAIRO_OSKEN_PYTHON") {
                Ok(py)
                    if Command::new(&py).args(["-c", "import os_ken"]).output().is_ok_and(|o| o.status.success()) =>
                {
                    None
                }
                _ => Some((
                    "no Python with os-ken (KAIRO_OSKEN_PYTHON; scripts/test.sh makes one)".to_string(),
                    required("KAIRO_REQUIRE_OSKEN"),
                )),
            },
        );
    match why {
        None => None,
        Some((w, true)) => panic!("{test}: required but {w}"),
        Some((w, false)) => {
            eprintln!("SKIPPED {test}: {w}");
            Some(w)
        }
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn osken_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/osken")
}

#[test]
fn an_os_ken_learning_switch_makes_ping_work_through_kairo() {
    if skip("an_os_ken_learning_switch_makes_ping_work_through_kairo").is_some() {
        return;
    }
    let py = std::env::var("KAIRO_OSKEN_PYTHON").expect("checked");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("controller.log");
    let pid = std::process::id() % 100_000;
    // A port of our own for the controller (the switch connects to it).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _controller = Proc(
        Command::new(&py)
            .arg(osken_dir().join("run.py"))
            .arg(osken_dir().join("learn.py"))
            .arg(port.to_string())
            .env("KAIRO_OSKEN_LOG", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start os-ken"),
    );
    wait_for("os-ken to listen", 30, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    let net = format!("10.{}.{}", 150 + pid % 100, (pid / 100) % 250);
    let a = Netns::new(&format!("kairo-oc{pid}a")).expect("netns a");
    let b = Netns::new(&format!("kairo-oc{pid}b")).expect("netns b");
    let va = Veth::new(&format!("koc{pid}a"), &format!("koc{pid}ai"), &a, Some(&format!("{net}.1/24"))).unwrap();
    let vb = Veth::new(&format!("koc{pid}b"), &format!("koc{pid}bi"), &b, Some(&format!("{net}.2/24"))).unwrap();
    let sock = dir.path().join("ctl.sock");
    let _switch = Proc(
        Command::new(env!("CARGO_BIN_EXE_kairo"))
            .args(["switch", "--port", &format!("{}=1", va.outer), "--port", &format!("{}=2", vb.outer)])
            .arg("--ctl")
            .arg(&sock)
            .args(["--openflow", &format!("tcp:127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kairo switch"),
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the controller to see the switch", 30, || read().contains("features "));
    // The controller's table-miss rule is in before ping starts (the
    // connection's flow-mod is applied before the next message is read).
    wait_for("the table-miss rule", 10, || {
        Command::new(env!("CARGO_BIN_EXE_kairo"))
            .args(["ctl", "--ctl"])
            .arg(&sock)
            .arg("dump-flows")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("CONTROLLER"))
    });

    let ok = a
        .cmd("ping")
        .args(["-n", "-q", "-c", "5", "-i", "0.2", "-W", "2", &format!("{net}.2")])
        .status()
        .expect("ping")
        .success();
    let text = read();
    assert!(ok, "ping failed through kairo and os-ken; controller log:\n{text}");
    assert!(text.contains("packet_in in_port=1 reason=0"), "{text}");
    assert!(
        text.contains("flow in_port=1") && text.contains("flow in_port=2"),
        "the controller learned both hosts:\n{text}"
    );
    assert!(!text.contains("error "), "the switch refused something:\n{text}");
    // The learned flows carry the traffic once installed...
    let dump = String::from_utf8_lossy(
        &Command::new(env!("CARGO_BIN_EXE_kairo"))
            .args(["ctl", "--ctl"])
            .arg(&sock)
            .arg("dump-flows")
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(dump.contains("idle_timeout=2, send_flow_rem priority=1"), "{dump}");
    // ...and go 2 s after it stops, which the controller hears.
    wait_for("FLOW_REMOVED at the controller", 15, || read().matches("removed reason=0 idle=2").count() >= 2);
    drop(va);
    drop(vb);
}

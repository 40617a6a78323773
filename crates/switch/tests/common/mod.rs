//! Helpers shared by the in-process switch tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kairo_datapath::DpConfig;
use kairo_flow::{Field, FlowKey};
use kairo_maintain::EngineKind;
use kairo_switch::ctl::{serve, Client};
use kairo_switch::{Attached, MemPeer, MemPort, Switch};

/// A running in-process switch; stops (and joins its threads) on drop.
pub struct Running {
    pub sw: Arc<Switch>,
    pub peers: Vec<MemPeer>,
    pub sock: PathBuf,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    server: Option<kairo_switch::ctl::Served>,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn peers_mut(&mut self) -> &mut [MemPeer] {
        &mut self.peers
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
    }
}

pub fn start(flows: &str, n_ports: u32, engine: EngineKind) -> Running {
    start_with(flows, n_ports, engine, DpConfig::default())
}

pub fn start_with(flows: &str, n_ports: u32, engine: EngineKind, cfg: DpConfig) -> Running {
    start_threads(flows, n_ports, engine, cfg, 1)
}

/// As [`start_with`], with `threads` forwarding threads.
pub fn start_threads(flows: &str, n_ports: u32, engine: EngineKind, cfg: DpConfig, threads: usize) -> Running {
    let pipeline =
        kairo_xlate::Pipeline::from_parts(kairo_ofproto::parse_flow_file(flows).expect("flows parse"), Vec::new())
            .expect("pipeline loads");
    let mut ports = Vec::new();
    let mut peers = Vec::new();
    for i in 1..=n_ports {
        let (p, peer) = MemPort::pair();
        ports.push(Attached { ofport: i, name: format!("mem{i}"), io: Box::new(p), counters: Default::default() });
        peers.push(peer);
    }
    let info = ports.iter().map(Attached::info).collect();
    let sw = Switch::new(pipeline, engine, cfg, info);
    sw.pmd_threads.store(threads, std::sync::atomic::Ordering::Relaxed);
    let sw = Arc::new(sw);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("ctl.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(sw.clone(), &sock, stop.clone()).expect("serve");
    let (sw2, stop2) = (sw.clone(), stop.clone());
    let fwd = std::thread::spawn(move || sw2.forward(ports, &stop2));
    Running { sw, peers, sock, stop, threads: vec![fwd], server: Some(server), _dir: dir }
}

/// Sends an ovs-ofctl-style command line as `kairo ctl` does: a command
/// line `kairo ctl` cannot make a request of is an error before it is sent.
pub fn call(c: &mut Client, cmd: &str, args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let req = kairo_switch::request::Request::parse(cmd, &args)?;
    let r = c.call(&req).expect("the switch answers");
    if r.ok {
        Ok(r.output)
    } else {
        Err(r.error)
    }
}

pub fn udp_key(in_port: u32, src: u64, tp_src: u16, tp_dst: u16) -> FlowKey {
    FlowKey::ipv4(in_port, src, 0x0200_0000_0002, 0x0a00_0001, 0x0a00_0002, 17)
        .with(Field::TpSrc, tp_src as u64)
        .with(Field::TpDst, tp_dst as u64)
}

/// Waits (bounded) for `n` frames out of a port.
pub fn recv_n(peer: &MemPeer, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        if let Ok(f) = peer.sent.recv_timeout(Duration::from_millis(50)) {
            out.push(f);
        }
    }
    out
}

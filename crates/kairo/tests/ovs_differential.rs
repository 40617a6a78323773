//! Differential test against real Open vSwitch (Debian's openvswitch-switch,
//! run in userspace with the dummy datapath by `../shared/ovs/trace.sh`).
//!
//! For random pipelines (unique priorities, no multi-bucket select groups,
//! which OVS hashes in the datapath) and 200 random packets each, the datapath
//! actions of kairo and of `ofproto/trace` must have the same effect: the same
//! packets (headers) out of the same ports, in the same order. It also counts
//! the distinct megaflows each side creates for the same packets.
//!
//! Needs Open vSwitch installed. Without it the test says so and returns,
//! unless KAIRO_REQUIRE_OVS=1 (as `.ci/run` sets), when it fails.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use kairo_testkit::{gen_case, gen_packets, GenConfig};
use kairo_xlate::odp::{apply, parse_actions};
use kairo_xlate::{translate, Pipeline};

fn shared_dir() -> PathBuf {
    match std::env::var_os("KAIRO_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

fn ovs_available() -> bool {
    ["/usr/sbin/ovs-vswitchd", "/usr/bin/ovs-vswitchd"].iter().any(|p| std::path::Path::new(p).exists())
        && Command::new("ovs-appctl").arg("--version").output().is_ok_and(|o| o.status.success())
}

struct OvsTrace {
    megaflow: String,
    actions: String,
}

fn ovs_trace(flows: &std::path::Path, groups: &std::path::Path, packets: &[String]) -> Vec<OvsTrace> {
    let script = shared_dir().join("ovs/trace.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(flows)
        .args(packets)
        .env("GROUP_FILE", groups)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "trace.sh failed: {}\n{}", String::from_utf8_lossy(&out.stderr), text);
    let mut res = Vec::new();
    let mut cur: Option<OvsTrace> = None;
    for line in text.lines() {
        if line.starts_with("Packet: ") {
            if let Some(c) = cur.take() {
                res.push(c);
            }
            cur = Some(OvsTrace { megaflow: String::new(), actions: String::new() });
        } else if let Some(m) = line.strip_prefix("Megaflow: ") {
            if let Some(c) = cur.as_mut() {
                c.megaflow = m.to_string();
            }
        } else if let Some(a) = line.strip_prefix("Datapath actions: ") {
            if let Some(c) = cur.as_mut() {
                c.actions = a.to_string();
            }
        }
    }
    res.extend(cur);
    res
}

#[test]
fn datapath_actions_match_open_vswitch() {
    if !ovs_available() {
        if std::env::var("KAIRO_REQUIRE_OVS").as_deref() == Ok("1") {
            panic!("KAIRO_REQUIRE_OVS=1 but Open vSwitch is not installed (run ../shared/ovs/install-ovs.sh)");
        }
        eprintln!("SKIPPED datapath_actions_match_open_vswitch: Open vSwitch is not installed here (../shared/ovs/install-ovs.sh installs it; CI does)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("kairo-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = GenConfig {
        n_tables: 4,
        rules_per_table: 4..12,
        resubmit: true,
        multi_bucket_select: false,
        miss_continue: false,
        unique_priorities: true,
        n_ports: 4,
    };
    let n_pipelines: u64 = std::env::var("KAIRO_DIFF_PIPELINES").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let (mut total, mut skipped) = (0usize, 0usize);
    let (mut ovs_mf_total, mut kairo_mf_total) = (0usize, 0usize);
    for seed in 1..=n_pipelines {
        let case = gen_case(seed * 7919, &cfg);
        let flows = dir.join(format!("p{seed}.flows"));
        let groups = dir.join(format!("p{seed}.groups"));
        std::fs::write(&flows, &case.flows).expect("write flows");
        std::fs::write(&groups, &case.groups).expect("write groups");
        let p = Pipeline::from_parts(
            kairo_ofproto::parse_flow_file(&case.flows).expect("flows parse"),
            kairo_ofproto::parse_group_file(&case.groups).expect("groups parse"),
        )
        .expect("pipeline");
        let packets = gen_packets(seed, 200, 4);
        let ovs = ovs_trace(&flows, &groups, &packets);
        assert_eq!(ovs.len(), packets.len(), "OVS traced {} of {} packets", ovs.len(), packets.len());
        let mut ovs_mf = BTreeSet::new();
        let mut kairo_mf = BTreeSet::new();
        for (spec, o) in packets.iter().zip(&ovs) {
            total += 1;
            let key = kairo_flow::parse_key(spec).expect("packet parses");
            let r = translate(&p, &key);
            kairo_mf.insert((key.masked(&r.mask), r.mask));
            ovs_mf.insert(o.megaflow.clone());
            let Ok(ovs_actions) = parse_actions(&o.actions) else {
                skipped += 1;
                if skipped <= 3 {
                    eprintln!("skipped (OVS action not modelled): {spec}: {}", o.actions);
                }
                continue;
            };
            let want = apply(&ovs_actions, &key);
            let got = apply(&r.actions, &key);
            assert_eq!(
                got,
                want,
                "\npipeline {seed}:\n{}\ngroups:\n{}\npacket: {spec}\nkairo: {}\n  OVS: {}\nkairo megaflow: {}\n  OVS megaflow: {}",
                case.flows,
                case.groups,
                kairo_xlate::format_actions(&r.actions),
                o.actions,
                kairo_flow::format_megaflow(&key, &r.mask),
                o.megaflow
            );
        }
        eprintln!(
            "pipeline {seed}: {} packets, megaflows: kairo {} vs OVS {}",
            packets.len(),
            kairo_mf.len(),
            ovs_mf.len()
        );
        ovs_mf_total += ovs_mf.len();
        kairo_mf_total += kairo_mf.len();
    }
    println!("differential: {total} packets over {n_pipelines} pipelines, {skipped} skipped; distinct megaflows kairo {kairo_mf_total} vs OVS {ovs_mf_total}");
    assert!(skipped * 10 <= total, "too many packets skipped: {skipped} of {total}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! What the binary's tests that need Open vSwitch share: whether it is
//! here, and skipping (SKIPPED, or a failure with KAIRO_REQUIRE_OVS=1, as
//! `.ci/run` sets) where it is not.

use std::process::Command;

/// Is Open vSwitch installed (the daemon and ovs-appctl)?
pub fn ovs_available() -> bool {
    ["/usr/sbin/ovs-vswitchd", "/usr/bin/ovs-vswitchd"].iter().any(|p| std::path::Path::new(p).exists())
        && Command::new("ovs-appctl").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// True (after saying so) if Open vSwitch is missing and not required.
pub fn skip(test: &str) -> bool {
    if ovs_available() {
        return false;
    }
    if std::env::var("KAIRO_REQUIRE_OVS").as_deref() == Ok("1") {
        panic!("KAIRO_REQUIRE_OVS=1 but Open vSwitch is not installed (run scripts/ovs/install-ovs.sh)");
    }
    eprintln!("SKIPPED {test}: Open vSwitch is not installed here (scripts/ovs/install-ovs.sh installs it; CI does)");
    true
}

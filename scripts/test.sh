#!/usr/bin/env bash
# The project's test command (the README's and CI's): installs what the tests
# need, then runs every test, lint and format check.
#   - Open vSwitch (Debian's openvswitch-switch) for the differential test,
#     when we can install it (root and apt); otherwise that test says SKIPPED.
#   - iproute2, ping, tcpdump and ethtool for the switch's network-namespace tests
#     (root only); without root those tests say SKIPPED.
#   - os-ken (PyPI, in target/osken-venv) for the real-controller test (root only).
# Then the DBSP reference engine (the `dbsp` cargo feature, off in a plain
# build: Feldera's DBSP is ~440 crates) is linted, documented and tested too.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ovs-vswitchd >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Open vSwitch for the differential test"
  bash scripts/ovs/install-ovs.sh
fi
if command -v ovs-vswitchd >/dev/null 2>&1 || [ -x /usr/sbin/ovs-vswitchd ]; then
  export KAIRO_REQUIRE_OVS=1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
  command -v ping >/dev/null 2>&1 || missing="$missing iputils-ping"
  command -v tcpdump >/dev/null 2>&1 || missing="$missing tcpdump"
  command -v ethtool >/dev/null 2>&1 || missing="$missing ethtool"
  if [ -n "$missing" ]; then
    echo "== installing$missing for the network-namespace tests"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; then
      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; } ||
        echo "== could not install$missing: the tests that need them will say SKIPPED"
    fi
  fi
  # Required when this machine can make namespaces (a probe); otherwise the
  # tests print SKIPPED with the reason and the summary counts them.
  probe="kairo-ci-probe-$$"
  if command -v ping >/dev/null 2>&1 && command -v tcpdump >/dev/null 2>&1 && command -v ethtool >/dev/null 2>&1 \
    && ip netns add "$probe" 2>/dev/null; then
    ip netns del "$probe"
    export KAIRO_REQUIRE_NETNS=1
  else
    echo "== namespaces or tools unavailable here: the switch's namespace tests will say SKIPPED"
  fi
fi
# os-ken, a real OpenFlow controller, for the controller test (root only:
# the test needs namespaces), in a venv of our own under target/.
if [ "$(id -u)" = 0 ]; then
  venv="$PWD/target/osken-venv"
  if ! "$venv/bin/python" -c 'import os_ken' >/dev/null 2>&1; then
    echo "== installing os-ken 4.2.2 (PyPI) for the controller test"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null 2>&1 || true
      python3 -m venv "$venv" >/dev/null 2>&1 || true
    fi
    "$venv/bin/pip" install -q 'os-ken==4.2.2' >/dev/null 2>&1 || true
  fi
  if "$venv/bin/python" -c 'import os_ken' >/dev/null 2>&1; then
    export KAIRO_OSKEN_PYTHON="$venv/bin/python" KAIRO_REQUIRE_OSKEN=1
  else
    echo "== could not install os-ken: the controller test will say SKIPPED"
  fi
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (every intra-doc link resolves)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
dbsp_features="kairo-dbsp/dbsp,kairo-bench/dbsp"
set +e
cargo test --workspace 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
echo "== the DBSP reference engine (feature dbsp): clippy, doc, tests"
cargo clippy -p kairo-dbsp -p kairo-bench -p kairo --all-targets --features "$dbsp_features" -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc -p kairo-dbsp -p kairo-bench --no-deps --quiet --features "$dbsp_features"
set +e
cargo test -p kairo-dbsp -p kairo-bench --features "$dbsp_features" --test view --test ttu_dbsp 2>&1 | tee -a "$log"
rc_dbsp=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] && rc=$rc_dbsp
passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
skipped=$(grep -c '^SKIPPED' "$log" || true)
echo
echo "tests: ${passed:-0} passed, ${failed:-0} failed, ${skipped} skipped"
exit "$rc"

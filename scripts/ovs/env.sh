# env.sh - source this to point OVS tools at the private reference instance.
# Usage: . scripts/ovs/env.sh
export OVS_REF_DIR=${OVS_REF_DIR:-/tmp/ovs-ref}
export OVS_RUNDIR=$OVS_REF_DIR OVS_DBDIR=$OVS_REF_DIR OVS_LOGDIR=$OVS_REF_DIR OVS_SYSCONFDIR=$OVS_REF_DIR

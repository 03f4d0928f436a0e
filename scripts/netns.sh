#!/usr/bin/env bash
# Run a command in network, PID and mount namespaces of its own (root only): its servers
# listen on addresses nobody else sees, and every process it leaves behind (an epmd, a
# server) dies with it. Loopback is up, and SHEPHERD_CLUSTER_ADDRESS, a non-loopback address
# on it, exists only inside: distributed MinIO refuses loopback peers on a machine it takes
# for a container (it finds /.dockerenv).
#
#   scripts/netns.sh .venv/bin/python -m pytest tests/cluster
set -euo pipefail
ADDRESS=10.213.0.1
if [[ ${SHEPHERD_NETNS:-} != 1 ]]; then
  exec unshare --net --pid --fork --mount-proc env SHEPHERD_NETNS=1 "$0" "$@"
fi
ip link set lo up
ip addr add "$ADDRESS/32" dev lo
export SHEPHERD_CLUSTER_ADDRESS=$ADDRESS
"$@"

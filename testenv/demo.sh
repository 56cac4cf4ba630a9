#!/bin/bash
# Plexus demo: installs what is needed, builds Plexus, and attaches a "pod" (a real network namespace) to three
# networks — a bridge cluster network, a macvlan network and a second bridge network — then tears it down again.
# Everything it creates is named px* and removed at the end, even on failure. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash testenv/install.sh
echo "== building plexus (release)"
swift build -c release --product plexus 2>&1 | tail -n 1
PLEXUS="$(swift build -c release --show-bin-path)/plexus"

T=$(mktemp -d /tmp/pxdemo.XXXXXX)
NS=pxdemo
FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)
cleanup() {
    # The demo never routes through the host: if anything turned forwarding on, put it back.
    if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$FORWARD_BEFORE" ]; then
        echo "$FORWARD_BEFORE" > /proc/sys/net/ipv4/ip_forward
    fi
    ip netns del $NS 2>/dev/null || true
    ip link del pxdemo-m0 2>/dev/null || true
    ip link del pxdemobr0 2>/dev/null || true
    ip link del pxdemobr1 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
cleanup; mkdir -p "$T"

ip netns add $NS
ip link add pxdemo-m0 type veth peer name pxdemo-m1   # macvlan master (this kernel has no dummy driver)
ip link set pxdemo-m0 up

cat > "$T/plexus.conf" <<JSON
{
  "cniVersion": "1.0.0", "name": "plexus-demo", "type": "plexus",
  "cniDir": "$T/cache", "confDir": "$T/net.d", "binDir": "/usr/lib/cni", "logLevel": "info", "logFile": "$T/plexus.log",
  "delegates": [
    {"cniVersion": "1.0.0", "name": "pxdemo-cluster", "plugins": [
      {"type": "bridge", "bridge": "pxdemobr0", "isGateway": false,
       "ipam": {"type": "host-local", "dataDir": "$T/ipam", "ranges": [[{"subnet": "10.231.250.0/24"}]]}}]},
    {"cniVersion": "0.4.0", "name": "pxdemo-macvlan", "type": "macvlan", "master": "pxdemo-m0", "mode": "bridge",
     "ipam": {"type": "host-local", "dataDir": "$T/ipam", "ranges": [[{"subnet": "10.231.251.0/24"}]]}},
    {"cniVersion": "0.3.1", "name": "pxdemo-storage", "plugins": [
      {"type": "bridge", "bridge": "pxdemobr1",
       "ipam": {"type": "host-local", "dataDir": "$T/ipam", "ranges": [[{"subnet": "10.231.252.0/24"}]]}}]}
  ]
}
JSON

export CNI_CONTAINERID=pxdemo0001 CNI_NETNS=/var/run/netns/$NS CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni
export CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=pod-a"
echo "== ADD (plexus returns the cluster network's result)"
CNI_COMMAND=ADD "$PLEXUS" < "$T/plexus.conf"
echo "== interfaces in the pod's network namespace"
ip -n $NS -br addr show
echo "== Plexus cache"
(cd "$T/cache" && find attachments results -type f | sort)
echo "== CHECK"
CNI_COMMAND=CHECK "$PLEXUS" < "$T/plexus.conf" && echo "ok"
echo "== DEL"
CNI_COMMAND=DEL "$PLEXUS" < "$T/plexus.conf" && echo "ok"
ip -n $NS -br addr show
left=$(find "$T/cache/attachments" "$T/cache/results" -type f 2>/dev/null | wc -l)
ips=$(find "$T/ipam" -type f -name '10.*' | wc -l)
echo "== after DEL: $left cache files, $ips host-local reservations"
echo "== timing from Plexus' log"
grep -E 'command done' "$T/plexus.log" || true
[ "$left" -eq 0 ] && [ "$ips" -eq 0 ]

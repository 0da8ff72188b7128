#!/usr/bin/env bash
# Steady demo traffic inside two namespaces so the dashboards show live data:
# VXLAN pings, UDP dropped by an iptables rule, packets failing strict rp_filter.
set -u
A=vdemo-a B=vdemo-b
cleanup() { ip netns del "$A" 2>/dev/null; ip netns del "$B" 2>/dev/null; }
if [ "${1:-}" = "--cleanup" ]; then cleanup; exit 0; fi
cleanup
ip netns add "$A"; ip netns add "$B"
ip -n "$A" link add va type veth peer name vb netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev va; ip -n "$B" addr add 10.77.0.2/24 dev vb
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set va up; ip -n "$B" link set vb up
ip -n "$A" link add vx77 type vxlan id 77 local 10.77.0.1 remote 10.77.0.2 dstport 4789
ip -n "$B" link add vx77 type vxlan id 77 local 10.77.0.2 remote 10.77.0.1 dstport 4789
ip -n "$A" addr add 10.78.0.1/24 dev vx77; ip -n "$B" addr add 10.78.0.2/24 dev vx77
ip -n "$A" link set vx77 up; ip -n "$B" link set vx77 up
ip netns exec "$B" iptables -A INPUT -p udp --dport 9999 -j DROP
ip netns exec "$B" sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.vb.rp_filter=1
ip -n "$A" addr add 10.79.0.1/32 dev va   # B has no route back to it: strict rp_filter drops
while true; do
    ip netns exec "$A" ping -q -c 5 -i 0.2 -w 2 10.78.0.2 >/dev/null 2>&1
    ip netns exec "$A" bash -c 'for i in $(seq 20); do echo x > /dev/udp/10.77.0.2/9999; done' 2>/dev/null
    ip netns exec "$A" ping -q -c 2 -i 0.2 -w 1 -I 10.79.0.1 10.77.0.2 >/dev/null 2>&1
    sleep 1
done

#!/bin/sh
# Two links into the test host, each a veth pair to a network namespace:
#   gept-internet  the internet as the host sees it: the OSRS API stand-in listens here on
#                  172.31.252.2:80; the compose containers reach it the way they reach the real
#                  API, forwarded by the host (Docker's FORWARD rules, then Oracle's REJECT)
#   gept-wan       a client outside the host (HTTPS from outside): 172.31.251.2 -> 172.31.251.1
# The test host itself cannot be reached through forwarding from outside, so "from outside"
# means from gept-wan to an address of the host.
set -eu

link() {
	netns=$1 veth=$2 host_address=$3 client_address=$4
	ip netns add "$netns"
	ip link add "$veth" type veth peer name "${veth}c"
	ip link set "${veth}c" netns "$netns"
	ip address add "$host_address/24" dev "$veth"
	ip link set "$veth" up
	ip -n "$netns" address add "$client_address/24" dev "${veth}c"
	ip -n "$netns" link set "${veth}c" up
	ip -n "$netns" link set lo up
	ip -n "$netns" route add default via "$host_address"
}

link gept-internet vinet 172.31.252.1 172.31.252.2
link gept-wan vwan 172.31.251.1 172.31.251.2

#!/bin/sh
# Two links into the test host, each a bridge with a network namespace behind a veth pair
# (the test host cannot forward, so "from outside" means from a namespace to an address of the
# host itself):
#   br-5eed0c0ffee1 / gept-compose  a compose network's bridge (Docker names them br-<12 hex>)
#                                   with a container behind it: 172.31.250.1 <- 172.31.250.2
#   gept-wan0 / gept-wan            the internet-facing link: 172.31.251.1 <- 172.31.251.2
set -eu

link() {
	bridge=$1 netns=$2 host_address=$3 client_address=$4 veth=$5
	ip link add "$bridge" type bridge
	ip address add "$host_address/24" dev "$bridge"
	ip link set "$bridge" up
	ip netns add "$netns"
	ip link add "$veth" type veth peer name "${veth}c"
	ip link set "${veth}c" netns "$netns"
	ip link set "$veth" master "$bridge" up
	ip -n "$netns" address add "$client_address/24" dev "${veth}c"
	ip -n "$netns" link set "${veth}c" up
	ip -n "$netns" link set lo up
}

link br-5eed0c0ffee1 gept-compose 172.31.250.1 172.31.250.2 vcompose
link gept-wan0 gept-wan 172.31.251.1 172.31.251.2 vwan

#!/usr/bin/env python3
"""What the underlay carried, for tests/e2e/cluster.sh: reads the nodes' NIC captures (QEMU
filter-dump, pcap, Ethernet, with or without a virtio-net header before each frame) and fails unless
  - every IPv4 packet between the two nodes' underlay addresses is WireGuard (UDP, port LISTEN
    on both ends; or an ICMP unreachable quoting such a packet: a node with wg0 down), and
    there are at least MIN_WG of them;
  - no IPv4 packet and no ARP frame carries an address in a cluster RANGE (overlay, pods,
    services), except the frames the injector wrote (source MAC 02:00:00:00:00:ee).

Usage: check-underlay.py --node IP --node IP --range CIDR... [--port 51820] [--min-wg N] PCAP...
"""
import argparse
import ipaddress
import struct
import sys

INJECTOR_MAC = bytes.fromhex("0200000000ee")


def frames(path):
    data = open(path, "rb").read()
    if len(data) < 24:
        return
    magic = struct.unpack_from("<I", data)[0]
    if magic != 0xA1B2C3D4:
        raise SystemExit(f"check-underlay: {path}: not a little-endian microsecond pcap (magic {magic:#x})")
    linktype = struct.unpack_from("<I", data, 20)[0]
    if linktype != 1:
        raise SystemExit(f"check-underlay: {path}: link type {linktype}, not Ethernet")
    records, off = [], 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, off)
        records.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    # QEMU's filter-dump on a tap netdev with a virtio-net header (Debian 12's QEMU 7.2) writes
    # that header (10 or 12 bytes) before each frame: the prefix that gives the most frames a
    # known EtherType (IPv4, ARP, IPv6) is the one.
    known = (0x0800, 0x0806, 0x86DD)
    def score(n):
        return sum(len(r) >= n + 14 and struct.unpack_from("!H", r, n + 12)[0] in known for r in records)
    skip = max((0, 10, 12), key=score)
    if records and score(skip) < len(records) // 2:
        raise SystemExit(f"check-underlay: {path}: no Ethernet framing found (best prefix {skip}: {score(skip)} of {len(records)})")
    for r in records:
        yield r[skip:]


def quotes_wireguard(icmp, nodes, port):
    """An ICMP destination-unreachable whose quoted packet is WireGuard between the nodes."""
    if len(icmp) < 8 + 20 + 4 or icmp[0] != 3:
        return False
    inner = icmp[8:]
    ihl = (inner[0] & 15) * 4
    isrc, idst = ipaddress.ip_address(inner[12:16]), ipaddress.ip_address(inner[16:20])
    if inner[9] != 17 or {isrc, idst} != nodes or len(inner) < ihl + 4:
        return False
    return struct.unpack_from("!HH", inner, ihl) == (port, port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", action="append", required=True)
    ap.add_argument("--range", action="append", required=True)
    ap.add_argument("--port", type=int, default=51820)
    ap.add_argument("--min-wg", type=int, default=10)
    ap.add_argument("pcap", nargs="+")
    a = ap.parse_args()
    nodes = {ipaddress.ip_address(n) for n in a.node}
    if len(nodes) != 2:
        raise SystemExit(f"check-underlay: two distinct node addresses wanted, got {a.node}")
    ranges = [ipaddress.ip_network(r) for r in a.range]
    in_cluster = lambda ip: any(ip in r for r in ranges)
    bad, wg, icmp_wg, total, injected = [], 0, 0, 0, 0
    for path in a.pcap:
        for f in frames(path):
            total += 1
            if len(f) < 14:
                continue
            if f[6:12] == INJECTOR_MAC:
                injected += 1
                continue
            etype = struct.unpack_from("!H", f, 12)[0]
            if etype == 0x0806 and len(f) >= 42:
                spa, tpa = ipaddress.ip_address(f[28:32]), ipaddress.ip_address(f[38:42])
                if in_cluster(spa) or in_cluster(tpa):
                    bad.append(f"{path}: ARP {spa} -> {tpa} (a cluster address)")
                continue
            if etype != 0x0800 or len(f) < 34:
                continue
            ihl = (f[14] & 15) * 4
            proto = f[23]
            src, dst = ipaddress.ip_address(f[26:30]), ipaddress.ip_address(f[30:34])
            if in_cluster(src) or in_cluster(dst):
                bad.append(f"{path}: IPv4 proto {proto} {src} -> {dst} in clear (a cluster address)")
                continue
            if {src, dst} == nodes:
                l4 = f[14 + ihl:]
                sport, dport = struct.unpack_from("!HH", l4) if len(l4) >= 4 else (0, 0)
                if proto == 17 and sport == a.port and dport == a.port:
                    wg += 1
                elif proto == 1 and quotes_wireguard(l4, nodes, a.port):
                    # A node whose wg0 is down (the wg0-down test) answers the peer's WireGuard
                    # packets with "port unreachable", quoting their (underlay, UDP) headers.
                    icmp_wg += 1
                else:
                    bad.append(f"{path}: {src} -> {dst} proto {proto} ports {sport}->{dport}: not WireGuard")
    print(f"check-underlay: {total} frames, {wg} WireGuard packets between {a.node[0]} and {a.node[1]} "
          f"(and {icmp_wg} ICMP errors about WireGuard packets), {injected} injected frames left out, "
          f"{len(bad)} in clear")
    for b in bad[:20]:
        print(f"  {b}")
    if bad:
        return 1
    if wg < a.min_wg:
        print(f"check-underlay: only {wg} WireGuard packets between the nodes (at least {a.min_wg} wanted)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

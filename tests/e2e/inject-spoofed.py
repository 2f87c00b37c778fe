#!/usr/bin/env python3
"""An attacker on the underlay, for tests/e2e/cluster.sh: run in the test's network namespace
(boot-cluster.sh --service), it waits until node a prints
  NACRE-INJECT-READY mac=M underlay=U overlay=O pod=P spoof=S
on its console, then writes raw Ethernet frames onto the bridge br0, to a's MAC:
  3 ICMP echo requests with source S (the peer's overlay address, a cluster source) to O,
  3 with source S to P (a's pod), then
  3 with source 10.0.2.2 (not a cluster address) to O (a's overlay address, kubelet's: the
    underlay must not reach it even from an outside source; any echo reply from O fails), then
  3 with source 10.0.2.2 (the control) to U,
and listens on br0 for a's echo replies to the control (proof the frames reach a). The node
counts what arrived (its ICMP InEchos, forwarded datagrams, IPReversePathFilter drops).
Prints "inject: done" only if the control was answered and nothing else was.
Frames it sends carry the source MAC 02:00:00:00:00:ee (check-underlay.py leaves them out).

Usage: inject-spoofed.py CONSOLE_LOG [TIMEOUT_S]   (prints "inject: ..." lines)
"""
import re
import socket
import struct
import sys
import time

INJECTOR_MAC = bytes.fromhex("0200000000ee")
CONTROL_SRC = "10.0.2.2"
ICMP_ID = 0x4E41  # "NA"


def csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def echo_frame(dst_mac: bytes, src: str, dst: str, seq: int, payload: bytes) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ICMP_ID, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dst_mac + INJECTOR_MAC + b"\x08\x00" + ip + icmp


def main() -> int:
    console, timeout = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 900
    deadline = time.time() + timeout
    ready = None
    while time.time() < deadline and ready is None:
        try:
            text = open(console, "rb").read().decode("utf-8", "replace")
        except FileNotFoundError:
            text = ""
        # Kernel records can land inside a line of the payload's (scripts/lib/console-text.sh).
        text = text.replace("\r", "")
        text = re.sub(r"\[ *\d+\.\d{6}\] [^\n]*(\n|\Z)", "", text) + "\n" + text
        m = re.search(r"NACRE-INJECT-READY mac=(\S+) underlay=(\S+) overlay=(\S+) pod=(\S+) spoof=(\S+)", text)
        if m:
            ready = m.groups()
        else:
            time.sleep(0.5)
    if ready is None:
        print("inject: node a never said NACRE-INJECT-READY", flush=True)
        return 1
    mac, under, over, pod, spoof = ready
    dst_mac = bytes.fromhex(mac.replace(":", ""))
    print(f"inject: a is {mac} {under}, overlay {over}, pod {pod}; spoofing {spoof}", flush=True)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind(("br0", 0))
    s.settimeout(0.2)
    seq = 0
    leaked = False
    for rnd in range(1, 4):
        for dst in (over, pod):
            for _ in range(3):
                seq += 1
                s.send(echo_frame(dst_mac, spoof, dst, seq, b"nacre-spoofed"))
        print(f"inject: round {rnd}: 3 spoofed echoes {spoof} -> {over}, 3 {spoof} -> {pod}", flush=True)
        for _ in range(3):
            seq += 1
            s.send(echo_frame(dst_mac, CONTROL_SRC, over, seq, b"nacre-overlay"))
        print(f"inject: round {rnd}: 3 echoes {CONTROL_SRC} -> {over} (must stay unanswered)", flush=True)
        control = set()
        for _ in range(3):
            seq += 1
            control.add(seq)
            s.send(echo_frame(dst_mac, CONTROL_SRC, under, seq, b"nacre-control"))
        print(f"inject: round {rnd}: 3 control echoes {CONTROL_SRC} -> {under}", flush=True)
        answered = set()
        until = time.time() + 10
        while time.time() < until and answered != control:
            try:
                f = s.recv(2048)
            except socket.timeout:
                continue
            if len(f) < 42 or f[6:12] != dst_mac or f[23] != 1:
                continue
            ihl = (f[14] & 15) * 4
            icmp = f[14 + ihl:]
            src = socket.inet_ntoa(f[26:30])
            typ, _, _, ident, sq = struct.unpack("!BBHHH", icmp[:8])
            if typ == 0 and ident == ICMP_ID:
                if sq in control and src == under:
                    answered.add(sq)
                else:
                    leaked = True
                    print(f"inject: a answered an echo it must not (seq {sq}, from {src})", flush=True)
        print(f"inject: round {rnd}: a answered {len(answered)} of 3 control echoes", flush=True)
        if answered == control:
            if leaked:
                print("inject: a answered from the underlay to a cluster address", flush=True)
                return 1
            print("inject: done", flush=True)
            return 0
    print("inject: a never answered the control echoes", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())

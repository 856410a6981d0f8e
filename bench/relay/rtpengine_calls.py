#!/usr/bin/env python3
"""Create and delete rtpengine calls for the media-relay benchmark (bench/relay/run.sh).

Talks to a running rtpengine over its ng control protocol (UDP; each message is
"<cookie> <bencoded dictionary>", each answer "<cookie> <bencoded dictionary>"). Starts nothing.

  rtpengine_calls.py create --ng 127.0.0.1:2223 --scenario scenario.json --map-out map.txt [--count N]
  rtpengine_calls.py delete --ng 127.0.0.1:2223 --count N [--prefix relay-bench-]
  rtpengine_calls.py ping   --ng 127.0.0.1:2223

create: one call per stream of the scenario (the first --count streams), each a plain one-way
media path caller -> rtpengine -> callee:
  - "offer" with the caller's SDP: c=IN IP4 <send_from address>, m=audio <send_from port> RTP/AVP 0;
  - "answer" with the callee's SDP: m=audio <recv_on port> RTP/AVP 0.
The SDP that "answer" returns (to be given to the caller) names the rtpengine port the caller
must send to: that port is written to the map file as "<index> <ip:port>", one line per stream,
for `relay-loadgen make-scenario --relay-map`. rtpengine forwards what arrives there to the
callee's address from the answer (recv_on). Both sides are RTP/AVP with the one codec PT 0, so
rtpengine neither transcodes nor touches SRTP (the packets are opaque SRTP to it and are passed
unchanged: relay-loadgen checks their tags); ICE is removed, no recording, no media-handover.

delete: "delete" for every call id created by "create" (call ids are <prefix><index>).
Exit status 1 with a message on the first refused command.
"""

import argparse
import json
import os
import socket
import sys
import time


# --- bencode ---------------------------------------------------------------------------------

def bencode(v):
    """Encodes str/bytes/int/list/dict (dict keys sorted, as bencode requires)."""
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, (bytes, bytearray)):
        return b"%d:%s" % (len(v), bytes(v))
    if isinstance(v, (list, tuple)):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError("cannot bencode %r" % type(v))


class BencodeError(ValueError):
    pass


def bdecode(data):
    """Decodes one bencoded value; byte strings come back as str when they are UTF-8."""
    v, end = _bdecode(data, 0)
    if end != len(data):
        raise BencodeError("trailing bytes at offset %d" % end)
    return v


def _bdecode(d, i):
    if i >= len(d):
        raise BencodeError("truncated at offset %d" % i)
    c = d[i:i + 1]
    if c == b"i":
        end = d.index(b"e", i)
        return int(d[i + 1:end]), end + 1
    if c == b"l":
        i += 1
        out = []
        while d[i:i + 1] != b"e":
            v, i = _bdecode(d, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while d[i:i + 1] != b"e":
            k, i = _bdecode(d, i)
            v, i = _bdecode(d, i)
            out[k] = v
        return out, i + 1
    if c.isdigit():
        colon = d.index(b":", i)
        n = int(d[i:colon])
        s = d[colon + 1:colon + 1 + n]
        if len(s) != n:
            raise BencodeError("truncated string at offset %d" % i)
        try:
            return s.decode(), colon + 1 + n
        except UnicodeDecodeError:
            return s, colon + 1 + n
    raise BencodeError("bad byte %r at offset %d" % (c, i))


# --- ng client -------------------------------------------------------------------------------

class Ng:
    def __init__(self, addr, timeout=2.0, retries=3):
        host, port = addr.rsplit(":", 1)
        self.addr = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.retries = retries
        self.seq = 0
        self.prefix = "%d_%d_" % (os.getpid(), int(time.time()))

    def call(self, msg):
        """Sends one command; the same cookie on retries (rtpengine answers a repeat from its cache)."""
        self.seq += 1
        cookie = (self.prefix + str(self.seq)).encode()
        data = cookie + b" " + bencode(msg)
        for _ in range(self.retries):
            self.sock.sendto(data, self.addr)
            deadline = time.monotonic() + self.sock.gettimeout()
            while time.monotonic() < deadline:
                try:
                    reply = self.sock.recv(65535)
                except socket.timeout:
                    break
                c, _, body = reply.partition(b" ")
                if c != cookie:
                    continue  # a late answer to an earlier retry
                return bdecode(body)
        raise RuntimeError("no answer from rtpengine at %s:%d to %r" % (self.addr + (msg.get("command"),)))


def checked(reply, what, want="ok"):
    if not isinstance(reply, dict) or reply.get("result") != want:
        reason = reply.get("error-reason") if isinstance(reply, dict) else reply
        raise RuntimeError("%s refused: %s" % (what, reason))
    return reply


def sdp(ip, port, sess):
    return (
        "v=0\r\n"
        "o=- %d 1 IN IP4 %s\r\n"
        "s=relay-bench\r\n"
        "c=IN IP4 %s\r\n"
        "t=0 0\r\n"
        "m=audio %d RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    ) % (sess, ip, ip, port)


def media_of(sdp_text):
    """(connection address, first audio port) of an SDP body."""
    ip = None
    port = None
    for line in sdp_text.replace("\r\n", "\n").split("\n"):
        if line.startswith("c=IN IP4 ") and ip is None:
            ip = line.split()[2]
        elif line.startswith("m=audio ") and port is None:
            port = int(line.split()[1])
            # A media-level c= after m= overrides the session one.
        elif line.startswith("c=IN IP4 ") and port is not None:
            ip = line.split()[2]
    if ip is None or port is None:
        raise RuntimeError("no c=/m=audio in the SDP rtpengine returned:\n" + sdp_text)
    return ip, port


# Flags for both sides: only relay. RTP/AVP in and out (no SRTP processing), one codec and no
# codec changes (no transcoding), ICE removed, addresses in the SDP trusted, no recording.
COMMON = {
    "ICE": "remove",
    "transport-protocol": "RTP/AVP",
    "replace": ["origin", "session-connection"],
    "flags": ["trust-address", "no-rtcp-attribute"],
    "record call": "no",
}


def create(args):
    with open(args.scenario) as f:
        streams = json.load(f)["streams"]
    count = args.count or len(streams)
    if count > len(streams):
        raise RuntimeError("--count %d: the scenario has %d streams" % (count, len(streams)))
    ng = Ng(args.ng)
    checked(ng.call({"command": "ping"}), "ping", "pong")
    lines = []
    t0 = time.monotonic()
    for i in range(count):
        s = streams[i]
        src_ip, src_port = s["send_from"].rsplit(":", 1)
        dst_ip, dst_port = s["recv_on"].rsplit(":", 1)
        call_id = "%s%d" % (args.prefix, i)
        offer = dict(COMMON)
        offer.update({"command": "offer", "call-id": call_id, "from-tag": "caller%d" % i,
                      "sdp": sdp(src_ip, int(src_port), 1000 + i)})
        r = checked(ng.call(offer), "offer for stream %d" % i)
        answer = dict(COMMON)
        answer.update({"command": "answer", "call-id": call_id, "from-tag": "caller%d" % i,
                       "to-tag": "callee%d" % i, "sdp": sdp(dst_ip, int(dst_port), 2000 + i)})
        r = checked(ng.call(answer), "answer for stream %d" % i)
        ip, port = media_of(r["sdp"])
        lines.append("%d %s:%d\n" % (i, ip, port))
        if i == 0 and args.verbose:
            sys.stderr.write("offer/answer for stream 0; SDP to the caller:\n%s\n" % r["sdp"])
    with open(args.map_out, "w") as f:
        f.write("# stream rtpengine-address (written by rtpengine_calls.py)\n")
        f.writelines(lines)
    sys.stderr.write("rtpengine_calls.py: %d calls created in %.1f s; map in %s\n"
                     % (count, time.monotonic() - t0, args.map_out))


def delete(args):
    ng = Ng(args.ng)
    failed = 0
    for i in range(args.count):
        r = ng.call({"command": "delete", "call-id": "%s%d" % (args.prefix, i),
                     "from-tag": "caller%d" % i})
        if not isinstance(r, dict) or r.get("result") not in ("ok",):
            failed += 1
    sys.stderr.write("rtpengine_calls.py: %d calls deleted, %d refused\n" % (args.count - failed, failed))
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("--ng", required=True, help="rtpengine's ng control address, ip:port")
    c.add_argument("--scenario", required=True, help="a relay-loadgen scenario (send_from, recv_on)")
    c.add_argument("--map-out", required=True, help="write '<index> <ip:port>' lines here")
    c.add_argument("--count", type=int, default=0, help="calls to create (default: every stream)")
    c.add_argument("--prefix", default="relay-bench-", help="call-id prefix")
    c.add_argument("--verbose", action="store_true")
    d = sub.add_parser("delete")
    d.add_argument("--ng", required=True)
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--prefix", default="relay-bench-")
    q = sub.add_parser("ping")
    q.add_argument("--ng", required=True)
    args = p.parse_args()
    try:
        if args.cmd == "create":
            create(args)
            return 0
        if args.cmd == "delete":
            return delete(args)
        checked(Ng(args.ng, timeout=0.5, retries=1).call({"command": "ping"}), "ping", "pong")
        return 0
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        sys.stderr.write("rtpengine_calls.py: %s\n" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())

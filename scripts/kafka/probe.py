#!/usr/bin/env python3
"""Readiness probe for the test Kafka broker started by scripts/kafka.sh.

Usage: probe.py HOST PORT [--timeout SECONDS]
       probe.py --random-uuid

Speaks the Kafka wire protocol directly (no client library needed):
  1. ApiVersions v0  -> the broker answers requests at all;
  2. Metadata v4..v8 -> the broker has caught up with the KRaft metadata log
     and lists itself (a registered, unfenced broker), i.e. clients can use it.
Exit status 0 when ready, 1 otherwise (reason on stderr).

--random-uuid prints a Kafka cluster id (base64url of 16 random bytes, no
padding, not starting with '-'), the same format as `kafka-storage random-uuid`.
"""
import base64
import os
import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"hookrelay-probe"


class Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ValueError("short response")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", "replace")


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        data += chunk
    return data


def request(sock, api_key, api_version, correlation_id, body):
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    r = Reader(recv_exact(sock, size))
    if r.take(">i") != correlation_id:
        raise ValueError("correlation id mismatch")
    return r


def probe(host, port, timeout):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = request(sock, API_VERSIONS, 0, 1, b"")
        err = r.take(">h")
        if err != 0:
            raise ValueError("ApiVersions error code %d" % err)
        ranges = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
            ranges[key] = (lo, hi)
        if API_METADATA not in ranges:
            raise ValueError("broker does not advertise Metadata")
        lo, hi = ranges[API_METADATA]
        version = max(lo, 4)
        if version > min(hi, 8):
            return "ApiVersions ok (no non-flexible Metadata version to check)"
        body = struct.pack(">ib", 0, 0)  # no topics, no auto-creation
        if version >= 8:
            body += struct.pack(">bb", 0, 0)
        r = request(sock, API_METADATA, version, 2, body)
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node_id, bhost, bport = r.take(">i"), r.string(), r.take(">i")
            r.string()  # rack
            brokers.append((node_id, bhost, bport))
        cluster_id = r.string()
        controller_id = r.take(">i")
        if not brokers:
            raise ValueError("metadata lists no brokers yet")
        if controller_id < 0:
            raise ValueError("no active controller yet")
        return "ready: cluster_id=%s brokers=%s" % (
            cluster_id, ",".join("%d@%s:%d" % b for b in brokers))


def random_uuid():
    while True:
        s = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not s.startswith("-") and s != "AAAAAAAAAAAAAAAAAAAAAA":
            return s


def main(argv):
    if argv[1:] == ["--random-uuid"]:
        print(random_uuid())
        return 0
    args = argv[1:]
    timeout = 2.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        msg = probe(args[0], int(args[1]), timeout)
    except Exception as e:  # noqa: BLE001 - any failure means "not ready"
        print("not ready: %s" % e, file=sys.stderr)
        return 1
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

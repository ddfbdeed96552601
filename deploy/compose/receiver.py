"""Demo webhook receiver for the docker-compose stack (standard library only).

Logs one JSON line per request (method, path, Standard Webhooks headers, whether
the signature verifies, the body) and answers RECEIVER_STATUS (default 200).

Environment:
  PORT             port to listen on (default 8080; 0 picks a free one)
  HOST             address to bind (default 0.0.0.0)
  WEBHOOK_SECRET   whsec_... secret to verify webhook-signature with (optional)
  RECEIVER_STATUS  HTTP status to answer POSTs with (default 200), e.g. 503 to
                   watch hookrelay route records through its retry tiers
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Standard Webhooks: receivers should refuse timestamps this far from now.
TOLERANCE_SECONDS = 5 * 60
# Bodies are logged up to this many characters.
LOG_BODY_CHARS = 2000


def decode_secret(secret):
    """Key bytes of a `whsec_<base64>` secret (a bare base64 string is accepted too)."""
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret)


def verify(key, msg_id, timestamp, body, signature_header, now=None):
    """Check a Standard Webhooks signature; returns "ok" or why it failed."""
    if not (msg_id and timestamp and signature_header):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts = int(timestamp)
    except ValueError:
        return "bad webhook-timestamp"
    now = time.time() if now is None else now
    if abs(now - ts) > TOLERANCE_SECONDS:
        return "timestamp outside tolerance"
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several space-separated "v1,<sig>" entries while a secret is rotated.
    for entry in signature_header.split():
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return "ok"
    return "no matching signature"


class Handler(BaseHTTPRequestHandler):
    server_version = "hookrelay-demo-receiver"
    key = None
    status = 200

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": "POST",
            "path": self.path,
            "webhook_id": self.headers.get("webhook-id"),
            "webhook_timestamp": self.headers.get("webhook-timestamp"),
            "user_agent": self.headers.get("user-agent"),
            "bytes": len(body),
            "status": self.status,
        }
        if self.key is not None:
            record["signature"] = verify(
                self.key,
                self.headers.get("webhook-id"),
                self.headers.get("webhook-timestamp"),
                body,
                self.headers.get("webhook-signature"),
            )
        text = body.decode("utf-8", errors="replace")
        record["body"] = text[:LOG_BODY_CHARS]
        print(json.dumps(record), flush=True)
        self.reply(self.status)

    def do_GET(self):
        # Health check / "is it up" from a browser.
        print(json.dumps({"method": "GET", "path": self.path}), flush=True)
        self.reply(200)

    def reply(self, status):
        payload = b'{"ok":true}' if 200 <= status < 300 else b'{"ok":false}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        # The JSON line above replaces the default access log on stderr.
        pass


def main():
    secret = os.environ.get("WEBHOOK_SECRET")
    Handler.key = decode_secret(secret) if secret else None
    Handler.status = int(os.environ.get("RECEIVER_STATUS", "200"))
    server = ThreadingHTTPServer(
        (os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8080"))), Handler
    )
    host, port = server.server_address[:2]
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    # As PID 1 in a container, SIGTERM is ignored unless handled: exit promptly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

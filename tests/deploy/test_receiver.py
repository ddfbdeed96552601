"""The demo receiver (deploy/compose/receiver.py), run for real on loopback."""

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import DEPLOY

SCRIPT = DEPLOY / "compose" / "receiver.py"
SECRET = "whsec_aG9va3JlbGF5IGRlbW8ga2V5LCBub3QgYSBzZWNyZXQ="


@pytest.fixture(scope="module")
def receiver_module():
    spec = importlib.util.spec_from_file_location("receiver", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sign(secret, msg_id, timestamp, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_verify_accepts_the_standard_webhooks_reference_vector(receiver_module):
    # The example from the Standard Webhooks specification.
    key = receiver_module.decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    header = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    ok = receiver_module.verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, header, now=1614265330)
    assert ok == "ok"
    # Rotation: any one of several space-separated signatures will do.
    assert receiver_module.verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body,
                                  "v1,bm90LWl0 " + header, now=1614265330) == "ok"
    assert receiver_module.verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body + b" ",
                                  header, now=1614265330) == "no matching signature"
    assert receiver_module.verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body,
                                  header, now=1614265330 + 3600) == "timestamp outside tolerance"


@pytest.fixture
def running_receiver():
    """Starts receiver.py on a free loopback port; yields (base_url, process)."""
    procs = []

    def start(status="200"):
        env = dict(os.environ, HOST="127.0.0.1", PORT="0", WEBHOOK_SECRET=SECRET, RECEIVER_STATUS=status)
        proc = subprocess.Popen([sys.executable, "-u", str(SCRIPT)], env=env,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        first = json.loads(proc.stdout.readline())
        return f"http://{first['listening']}", proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def post(url, body, headers):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_receiver_logs_each_request_and_checks_signatures(running_receiver):
    url, proc = running_receiver()
    body = b'{"order": 42}'
    ts = str(int(time.time()))
    good = {"content-type": "application/json", "webhook-id": "evt-1", "webhook-timestamp": ts,
            "webhook-signature": sign(SECRET, "evt-1", ts, body)}
    assert post(url + "/hooks", body, good) == 200
    bad = dict(good, **{"webhook-signature": sign("whsec_" + base64.b64encode(b"x" * 32).decode(), "evt-1", ts, body)})
    assert post(url + "/hooks", body, bad) == 200
    first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
    assert (first["path"], first["webhook_id"], first["signature"]) == ("/hooks", "evt-1", "ok")
    assert json.loads(first["body"]) == {"order": 42}
    assert second["signature"] == "no matching signature"


def test_receiver_answers_the_configured_status(running_receiver):
    url, proc = running_receiver(status="503")
    assert post(url + "/hooks", b"{}", {"content-type": "application/json"}) == 503
    assert json.loads(proc.stdout.readline())["status"] == 503

#!/usr/bin/env python3
"""A fake payment provider for the checkout example (Python's standard library only).

It checks `Authorization: Bearer <key>`, deduplicates on `Idempotency-Key`
(a request seen before gets the first answer again and charges nothing),
keeps its ledger in a JSON file, and can be told to decline or to be slow.

    python3 provider.py [--port 8099] [--key sk_test_wasaga] [--ledger ledger.json]

Routes:
  POST /v1/charges  {amount, currency, card, reference}  -> 201 {id, status}
                    card "tok_declined" -> 402 {error}
  POST /v1/refunds  {charge}                             -> 200 {id, status}
  POST /webhook     anything                             -> 204 (or the set failure)
  POST /echo        anything                             -> 200 {authorization} (a leaky server)
  GET  /v1/ledger                                        -> the ledger
  POST /_control    {"slow_ms": N, "webhook_status": S, "big_kb": K}  (tests and tours)
Every answer carries X-Seen-Idempotency-Key with the key it was given.
"""

import argparse
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


class Ledger:
    def __init__(self, path):
        self.path = path
        if os.path.exists(path):
            with open(path) as f:
                self.data = json.load(f)
        else:
            self.data = {"charges": {}, "refunds": {}, "answers": {}, "requests": [], "webhooks": []}

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-pay/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("provider: " + (fmt % args) + "\n")

    def answer(self, status, body=None, key=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if key:
            self.send_header("X-Seen-Idempotency-Key", key)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return {"raw": raw.decode("utf-8", "replace")}

    def do_GET(self):
        if self.path.startswith("/v1/ledger"):
            with LOCK:
                return self.answer(200, self.server.ledger.data)
        if self.path.startswith("/big"):
            kb = self.server.control.get("big_kb", 64)
            data = b"x" * (kb * 1024)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.answer(404, {"error": "no such route"})

    def do_POST(self):
        body = self.body()
        key = self.headers.get("Idempotency-Key")
        auth = self.headers.get("Authorization", "")
        url = urlsplit(self.path)
        path = url.path
        authorized = auth == "Bearer " + self.server.key
        ledger = self.server.ledger
        with LOCK:
            ledger.data["requests"].append(
                {
                    "path": path,
                    "idempotency_key": key,
                    "authorized": authorized,
                    # What an unauthorized caller sent (never the real key).
                    "authorization": None if authorized else auth,
                    "query_key": parse_qs(url.query).get("key", [None])[0],
                    # The W3C trace context the caller passed on, if any.
                    "traceparent": self.headers.get("traceparent"),
                }
            )
            ledger.save()
        if path == "/_control":
            self.server.control.update(body)
            return self.answer(200, self.server.control)
        if path == "/echo":
            # Echoes the Authorization header, as a careless error page might.
            return self.answer(200, {"authorization": auth}, key)
        if path == "/webhook":
            with LOCK:
                ledger.data["webhooks"].append(body)
                ledger.save()
            status = self.server.control.get("webhook_status", 204)
            return self.answer(status, None if status == 204 else {"error": "webhook failed"}, key)
        if not authorized:
            return self.answer(401, {"error": "bad API key"}, key)
        slow = self.server.control.get("slow_ms", 0)
        if slow:
            time.sleep(slow / 1000)
        with LOCK:
            if key and key in ledger.data["answers"]:
                status, answer = ledger.data["answers"][key]
                return self.answer(status, answer, key)
            if path == "/v1/charges":
                if body.get("card") == "tok_declined":
                    status, answer = 402, {"error": "card_declined"}
                else:
                    charge_id = "ch_%d" % (len(ledger.data["charges"]) + 1)
                    ledger.data["charges"][charge_id] = {
                        "amount": body.get("amount"),
                        "currency": body.get("currency"),
                        "reference": body.get("reference"),
                        "idempotency_key": key,
                        "refunded": False,
                    }
                    status, answer = 201, {"id": charge_id, "status": "captured"}
            elif path == "/v1/refunds":
                charge = ledger.data["charges"].get(body.get("charge"))
                if charge is None:
                    status, answer = 404, {"error": "no such charge"}
                else:
                    refund_id = "re_%d" % (len(ledger.data["refunds"]) + 1)
                    charge["refunded"] = True
                    ledger.data["refunds"][refund_id] = {"charge": body.get("charge"), "idempotency_key": key}
                    status, answer = 200, {"id": refund_id, "status": "refunded"}
            else:
                return self.answer(404, {"error": "no such route"}, key)
            if key:
                ledger.data["answers"][key] = [status, answer]
            ledger.save()
        self.answer(status, answer, key)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--key", default=os.environ.get("FAKE_PAY_KEY", "sk_test_wasaga"))
    parser.add_argument("--ledger", default="ledger.json")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.key = args.key
    server.ledger = Ledger(args.ledger)
    server.control = {}
    # The first line says where it listens (tests read the port from it).
    print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

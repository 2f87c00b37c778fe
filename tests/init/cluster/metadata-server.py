#!/usr/bin/env python3
"""A stand-in for a cloud's instance metadata server, for nacre-init's boot tests.

Usage: metadata-server.py --cloud gcp|aws|azure --file CLUSTER_TOML --log LOG
                          [--bind 169.254.169.254] [--port 80]

It serves CLUSTER_TOML the way the cloud does and checks what the cloud checks:
  gcp:   GET /computeMetadata/v1/instance/attributes/nacre-cluster with Metadata-Flavor: Google
         (else 403); every response carries Metadata-Flavor: Google.
  aws:   PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds (1-21600, else 400)
         returns a token; GET /latest/user-data with X-aws-ec2-metadata-token (else 401).
  azure: GET /metadata/instance/compute/userData?api-version=2021-01-01&format=text with
         Metadata: true (else 400) returns the file base64-encoded.
Anything else is 404. Each request goes to LOG as one line: METHOD PATH followed by the
request's headers (name=value, space-separated), then the status sent.
"""
import argparse
import base64
import http.server
import secrets

ap = argparse.ArgumentParser()
ap.add_argument("--cloud", required=True, choices=["gcp", "aws", "azure"])
ap.add_argument("--file", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--bind", default="169.254.169.254")
ap.add_argument("--port", type=int, default=80)
args = ap.parse_args()
TOKEN = secrets.token_urlsafe(32)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", headers=()):
        with open(args.log, "a") as f:
            hs = " ".join(f"{k}={v}" for k, v in self.headers.items())
            f.write(f"{self.command} {self.path} {hs} -> {status}\n")
        self.send_response(status)
        if args.cloud == "gcp":
            self.send_header("Metadata-Flavor", "Google")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def config(self):
        with open(args.file, "rb") as f:
            return f.read()

    def do_GET(self):
        if args.cloud == "gcp":
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.reply(403)
            if self.path == "/computeMetadata/v1/instance/attributes/nacre-cluster":
                return self.reply(200, self.config(), [("Content-Type", "application/text")])
        elif args.cloud == "aws":
            if self.path == "/latest/user-data":
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    return self.reply(401)
                return self.reply(200, self.config())
        elif args.cloud == "azure":
            if self.headers.get("Metadata") != "true":
                return self.reply(400)
            if self.path == "/metadata/instance/compute/userData?api-version=2021-01-01&format=text":
                return self.reply(200, base64.b64encode(self.config()), [("Content-Type", "text/plain; charset=utf-8")])
        self.reply(404)

    def do_PUT(self):
        if args.cloud == "aws" and self.path == "/latest/api/token":
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self.reply(400)
            return self.reply(200, TOKEN.encode(), [("X-aws-ec2-metadata-token-ttl-seconds", ttl)])
        self.reply(404)


http.server.ThreadingHTTPServer((args.bind, args.port), Handler).serve_forever()

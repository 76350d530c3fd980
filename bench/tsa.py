#!/usr/bin/env python3
"""A local RFC 3161 time-stamp authority for the benchmark: each POST's body is a TimeStampReq, answered by the real
`openssl ts -reply` with the PKI in DIR (made by bench/run.sh). Usage: tsa.py PORT DIR"""
import http.server
import os
import subprocess
import sys
import tempfile

port, pki = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with tempfile.TemporaryDirectory() as d:
            q, r = os.path.join(d, "q.tsq"), os.path.join(d, "r.tsr")
            open(q, "wb").write(query)
            subprocess.run(["openssl", "ts", "-reply", "-config", os.path.join(pki, "ts.cnf"), "-queryfile", q,
                            "-out", r], check=True, capture_output=True, cwd=pki)
            body = open(r, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

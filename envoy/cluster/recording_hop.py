"""A recording TLS hop between Envoy and the real kubelet (world: the real kubelet of
hack/cluster.sh): it serves HTTPS with the kubelet's own certificate (node IP and
127.0.0.1 in its SANs, signed by the cluster's CA, so Envoy verifies it as it
verifies the kubelet), forwards every request unchanged to the kubelet at the node
IP, and keeps what it received and the kubelet's exact answer. The tests compare
Envoy's output with `kubelet-scope rewrite` on those same upstream bytes, and read
from it which requests reached the kubelet at all."""

import http.client
import http.server
import ssl
import threading

# Hop-by-hop headers (RFC 9110 7.6.1): not forwarded in either direction.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


class Exchange:
    def __init__(self, method, path, request_headers, status, headers, body):
        self.method = method
        self.path = path
        self.request_headers = request_headers
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"<{self.method} {self.path} -> {self.status}, {len(self.body)} bytes>"


class RecordingHop:
    def __init__(self, cert, key, ca, upstream_host, upstream_port):
        self.exchanges = []
        self.lock = threading.Lock()
        hop = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                ctx = ssl.create_default_context(cafile=str(ca))
                conn = http.client.HTTPSConnection(
                    upstream_host, upstream_port, context=ctx, timeout=30
                )
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                    out = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP]
                    status = r.status
                except (OSError, http.client.HTTPException):
                    # the kubelet is away (restarted): Envoy sees the connection close
                    # without an answer, as it would see the kubelet's refusal
                    self.close_connection = True
                    return
                finally:
                    conn.close()
                with hop.lock:
                    hop.exchanges.append(
                        Exchange(self.command, self.path, dict(headers), status, out, data)
                    )
                self.send_response_only(status)
                for k, v in out:
                    if k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def requests(self):
        with self.lock:
            return list(self.exchanges)

    def last(self, path):
        """The last exchange of `path` (exact, query included)."""
        for e in reversed(self.requests()):
            if e.path == path:
                return e
        raise AssertionError(f"{path} never reached the kubelet: {self.requests()}")

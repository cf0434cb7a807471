"""A kubelet stand-in for the end-to-end tests, the demo and the benchmark.

Not product code: it serves kubelet bodies (the folders given with --fixtures:
third-party captures, the project's own captures and synthetic bodies) over HTTPS the
way a kubelet does, so that Envoy and the filter meet real bytes:

- TLS on loopback with the certificate it is given; every request must carry
  `Authorization: Bearer <token>` (401 otherwise), as the kubelet requires.
- Routed as a kubelet 1.20-1.35 routes: /metrics, /metrics/cadvisor,
  /metrics/resource, /metrics/probes, /metrics/slis (Prometheus text, exact paths:
  `/metrics/cadvisor/` is a 404 as on a kubelet), /stats/summary and /pods, with or
  without a trailing slash, /runningpods/ (JSON; /runningpods is a 301 to it, as Go's
  ServeMux answers), plus /configz and /healthz so that a leak past the filter
  would be visible. Anything else is Go's `404 page not found`.
- gzip only on the Prometheus endpoints, when the request's Accept-Encoding allows
  it (a kubelet never gzips JSON).
- Bodies are sent with chunked transfer encoding in odd chunk sizes.

A test steers one response with request headers, which Envoy forwards:

  x-standin-fixture: NAME    serve the body NAME of a --fixtures folder (or a file
                             given with --extra-fixture) instead of the path's default
  x-standin-status: CODE     answer CODE with a short text body
  x-standin-hang: headers    never answer (upstream timeout)
  x-standin-hang: body       send the headers and half the body, then stall
  x-standin-trailers: 1      end the chunked body with a trailer
  x-standin-gzip: always     gzip even when the client asked for identity
  x-standin-chunk: N         chunk size in bytes (default: cycling odd sizes)

`GET /_standin/requests` (directly, not through Envoy: the filter denies unknown
paths) returns the headers of the last requests as JSON, so tests can check what
Envoy forwarded: the injected token, Accept-Encoding, no tenant header.
"""

import argparse
import collections
import gzip
import http.server
import itertools
import json
import os
import ssl
import sys
import threading

TEXT = "text/plain; version=0.0.4; charset=utf-8"
JSON = "application/json"

# Kubelet path -> (fixture prefix, content type). The default fixture of a path is
# the first body with that prefix (first folder first) unless --serve names another;
# a path with no body at all answers 404.
ENDPOINTS = {
    "/metrics": ("kubelet-metrics-", TEXT),
    "/metrics/cadvisor": ("cadvisor-", TEXT),
    "/metrics/resource": ("resource-", TEXT),
    "/metrics/probes": ("probes-", TEXT),
    "/metrics/slis": ("slis-", TEXT),
    "/stats/summary": ("stats-summary-", JSON),
    "/pods": ("pods-", JSON),
    "/runningpods/": ("pods-", JSON),
}

# The forms go-restful also routes to a web service's root, and Go's ServeMux
# redirects to a subtree's root.
ALIASES = {"/stats/summary/": "/stats/summary", "/pods/": "/pods"}
REDIRECTS = {"/runningpods": "/runningpods/"}

# Chunk sizes cycled through when the request does not choose one: odd, small and
# large, so that lines, escapes and JSON elements are split at arbitrary bytes.
ODD_CHUNKS = (1, 7, 100, 4093, 65537, 13, 8191, 300001, 2)


class Fixtures:
    """Bodies by file name, read once (the largest is ~10 MB); a name in several
    folders is the first folder's."""

    def __init__(self, directories, extra):
        self.directories = directories
        self.extra = dict(extra)
        self.cache = {}
        self.lock = threading.Lock()

    def names(self):
        found = []
        for d in self.directories:
            found += sorted(n for n in os.listdir(d) if n.endswith((".txt", ".json")))
        return found + sorted(self.extra)

    def path(self, name):
        for d in self.directories:
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
        raise KeyError(name)

    def get(self, name):
        with self.lock:
            if name not in self.cache:
                if name in self.extra:
                    path = self.extra[name]
                elif "/" in name or name.startswith("."):
                    raise KeyError(name)
                else:
                    path = self.path(name)
                with open(path, "rb") as f:
                    self.cache[name] = f.read()
            return self.cache[name]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubelet-standin"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("standin: " + fmt % args + "\n")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/_standin/requests":
            return self.send_plain(200, json.dumps(list(self.server.seen)), JSON)
        self.server.seen.append(
            {"path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()]}
        )
        if self.headers.get("authorization") != "Bearer " + self.server.token:
            return self.send_plain(401, "Unauthorized\n")
        hang = self.headers.get("x-standin-hang")
        if hang == "headers":
            return self.stall()
        status = self.headers.get("x-standin-status")
        if status:
            return self.send_plain(int(status), f"stand-in error {status}\n")
        if path in REDIRECTS:
            return self.redirect(REDIRECTS[path])
        path = ALIASES.get(path, path)
        body, content_type = self.body_for(path)
        if body is None:
            return self.send_plain(404, "404 page not found\n")
        gzip_always = self.headers.get("x-standin-gzip") == "always"
        accepts_gzip = path.startswith("/metrics") and "gzip" in (
            self.headers.get("accept-encoding") or ""
        )
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if gzip_always or accepts_gzip:
            body = gzip.compress(body, compresslevel=1)
            self.send_header("Content-Encoding", "gzip")
        trailers = self.headers.get("x-standin-trailers") == "1"
        if trailers:
            self.send_header("Trailer", "x-standin-checksum")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        limit = len(body) // 2 if hang == "body" else len(body)
        self.send_chunks(body[:limit], self.headers.get("x-standin-chunk"))
        if hang == "body":
            self.wfile.flush()
            return self.stall()
        self.wfile.write(b"0\r\n")
        if trailers:
            self.wfile.write(b"x-standin-checksum: %d\r\n" % len(body))
        self.wfile.write(b"\r\n")

    def do_HEAD(self):
        """As GET, without the body (Go's net/http answers HEAD on every GET route)."""
        path = self.path.split("?", 1)[0]
        if self.headers.get("authorization") != "Bearer " + self.server.token:
            return self.send_plain(401, "Unauthorized\n", head=True)
        if path in REDIRECTS:
            return self.redirect(REDIRECTS[path], head=True)
        body, content_type = self.body_for(ALIASES.get(path, path))
        if body is None:
            return self.send_plain(404, "404 page not found\n", head=True)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def body_for(self, path):
        if path == "/configz":
            return b'{"kubeletconfig":{"staticPodPath":"/etc/kubernetes/manifests"}}', JSON
        if path.startswith("/healthz"):
            return b"ok", "text/plain; charset=utf-8"
        if path not in ENDPOINTS:
            return None, None
        name = self.headers.get("x-standin-fixture") or self.server.defaults[path]
        if name is None:
            return None, None
        try:
            return self.server.fixtures.get(name), ENDPOINTS[path][1]
        except (KeyError, OSError):
            return None, None

    def send_chunks(self, body, size):
        sizes = itertools.repeat(int(size)) if size else itertools.cycle(ODD_CHUNKS)
        offset = 0
        for n in sizes:
            if offset >= len(body):
                break
            chunk = body[offset : offset + n]
            offset += len(chunk)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    def redirect(self, target, head=False):
        """Go's ServeMux redirect: 301, Location with the query kept, a tiny HTML body."""
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        location = target + ("?" + query if query else "")
        data = f'<a href="{location}">Moved Permanently</a>.\n\n'.encode()
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def send_plain(self, status, text, content_type="text/plain; charset=utf-8", head=False):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def stall(self):
        # Hold the connection open until the peer gives up or the server stops.
        while not self.server.stopping.wait(0.2):
            pass
        self.close_connection = True


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument(
        "--fixtures",
        action="append",
        required=True,
        help="a folder of kubelet bodies (repeatable, first folder first)",
    )
    p.add_argument(
        "--serve",
        action="append",
        default=[],
        metavar="PATH=FIXTURE",
        help="default fixture of a kubelet path (repeatable)",
    )
    p.add_argument(
        "--extra-fixture",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a body outside the fixtures directory (e.g. a generated 10 MB cadvisor)",
    )
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    extra = [e.split("=", 1) for e in args.extra_fixture]
    fixtures = Fixtures(args.fixtures, extra)
    defaults = {}
    for path, (prefix, _) in ENDPOINTS.items():
        defaults[path] = next((n for n in fixtures.names() if n.startswith(prefix)), None)
    for item in args.serve:
        path, name = item.split("=", 1)
        if path not in ENDPOINTS:
            p.error(f"--serve: {path} is not a kubelet path this stand-in serves")
        defaults[path] = name

    server = Server(("127.0.0.1", args.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    # The handshake happens in the request's thread, not in accept().
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    with open(args.token_file) as f:
        server.token = f.read().strip()
    server.fixtures = fixtures
    server.defaults = defaults
    server.seen = collections.deque(maxlen=50)
    server.stopping = threading.Event()
    server.verbose = args.verbose
    print(f"kubelet stand-in on https://127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

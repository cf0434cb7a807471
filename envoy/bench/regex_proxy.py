"""The kind of kubelet proxy KaaS platforms deploy today, for comparison only.

A line-by-line regex filter written after the one in ../shared/context/
(kubelet-proxy-namespace-filtering.md): `http.server`, the whole kubelet body read
with urllib, decoded, split into lines, and every line kept only if
`re.search(r'namespace="([^"]*)"')` finds an allowed namespace (or none at all).
It is what `make bench-envoy` measures the filter against; it is not a usable
proxy (it is fooled by `exported_namespace=`, leaks every non-metrics path, and
injects no labels).

Deliberate differences from that proxy, each in its favour or needed by the
benchmark, none of them changing the per-byte work:

- ThreadingHTTPServer instead of HTTPServer, so that concurrent scrapes overlap
  (the GIL still serializes the filtering) instead of queueing one behind another;
- a Content-Length on the answer (the original ends the body by closing the
  connection, which load generators may count as an error);
- it verifies the kubelet's certificate against --ca instead of not at all;
- it forwards the stand-in's `x-standin-*` steering headers, so that it fetches
  exactly the body Envoy fetches.
"""

import argparse
import contextlib
import http.server
import re
import ssl
import sys
import urllib.request

NAMESPACE = re.compile(r'namespace="([^"]*)"')


def filter_lines(content, allowed):
    """The original's loop: comments and blank lines kept, a series kept when its
    first `namespace="…"` match is allowed or when there is none."""
    filtered_lines = []
    for line in content.split("\n"):
        if line.startswith("#") or not line.strip():
            filtered_lines.append(line)
            continue
        ns_match = NAMESPACE.search(line)
        if ns_match:
            if ns_match.group(1) in allowed:
                filtered_lines.append(line)
        else:
            filtered_lines.append(line)
    return "\n".join(filtered_lines)


class FilteringProxy(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        req = urllib.request.Request(self.server.kubelet + self.path)
        req.add_header("Authorization", self.headers.get("Authorization", ""))
        for name, value in self.headers.items():
            if name.lower().startswith("x-standin-"):
                req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, context=self.server.tls) as response:
                content = response.read().decode("utf-8")
                if "/metrics" in self.path:
                    content = filter_lines(content, self.server.allowed)
                data = content.encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        except Exception as e:  # the original answers every failure with a 500
            data = str(e).encode("utf-8")
            self.send_response(500)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--kubelet", required=True, help="https://127.0.0.1:PORT")
    p.add_argument("--ca", required=True, help="the kubelet's certificate")
    p.add_argument("--allowed", required=True, help="comma-separated namespaces")
    args = p.parse_args(argv)

    server = Server(("127.0.0.1", args.port), FilteringProxy)
    server.kubelet = args.kubelet.rstrip("/")
    server.tls = ssl.create_default_context(cafile=args.ca)
    server.allowed = args.allowed.split(",")
    print(f"regex proxy on http://127.0.0.1:{args.port}, allowed: {server.allowed}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The real cluster's Service names, for its DNS (hack/cluster.sh runs this and
Debian's dnsmasq; CoreDNS is in none of the registries this machine reaches).

Lists the apiserver's Services every half second and keeps HOSTS as an /etc/hosts
file of their ClusterIPs: `<service>.<namespace>.svc.cluster.local` and
`<service>.<namespace>.svc`, the names CoreDNS's kubernetes plugin answers for a
ClusterIP Service. dnsmasq reads it from its --hostsdir, which it watches (the file is
replaced whole, so it never reads half of one). A failed list (the apiserver
restarting) keeps the last file.

    dns.py --apiserver URL --ca CA --token TOKEN --hosts FILE
"""

import argparse
import json
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path

DOMAIN = "cluster.local"


def records(services):
    """The hosts file's lines for a ServiceList: one line per ClusterIP Service."""
    lines = []
    for svc in services["items"]:
        ip = svc["spec"].get("clusterIP")
        if not ip or ip == "None":
            continue
        name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
        lines.append(f"{ip} {name}.{ns}.svc.{DOMAIN} {name}.{ns}.svc\n")
    return "".join(sorted(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--apiserver", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--hosts", type=Path, required=True)
    a = p.parse_args()
    context = ssl.create_default_context(cafile=a.ca)
    request = urllib.request.Request(
        f"{a.apiserver}/api/v1/services", headers={"Authorization": f"Bearer {a.token}"}
    )
    # Written beside the watched folder, then moved in: dnsmasq sees whole files only.
    tmp = a.hosts.parent.parent / f".{a.hosts.name}.tmp"
    written = None
    while True:
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as r:
                text = records(json.load(r))
        except (OSError, ValueError, KeyError) as e:
            print(f"dns.py: listing Services failed: {e}", file=sys.stderr, flush=True)
            text = written
        if text is not None and text != written:
            tmp.write_text(text)
            os.replace(tmp, a.hosts)
            written = text
            print(f"dns.py: {text.count(chr(10))} Services", file=sys.stderr, flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main()

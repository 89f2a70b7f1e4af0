#!/usr/bin/env python3
"""Read Key Vault secrets through kvproxy with the Python standard library.

    KVPROXY_URL=http://127.0.0.1:8380 python3 example.py
"""
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

BASE = os.environ.get("KVPROXY_URL", "http://127.0.0.1:8380")


class KvproxyError(Exception):
    """The vault (or kvproxy) refused; diagnosis is kvproxy's code, if any."""

    def __init__(self, status, diagnosis, detail):
        super().__init__(f"{status} {diagnosis or '-'}: {detail}")
        self.status, self.diagnosis, self.detail = status, diagnosis, detail


def get(url):
    # kvproxy refuses requests without "Metadata: true" (SSRF protection).
    req = urllib.request.Request(url, headers={"Metadata": "true"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        kv = doc.get("kvproxy") or {}
        detail = kv.get("detail") or (doc.get("error") or {}).get("message") or body.decode(errors="replace")
        raise KvproxyError(e.code, e.headers.get("X-Kvproxy-Diagnosis") or kv.get("diagnosis"), detail) from None


def read_secret(name):
    return get(f"{BASE}/secrets/{urllib.parse.quote(name)}")["value"]


def list_secret_names(page_size=1):
    """Follows nextLink (kvproxy points it back at itself) until the last page."""
    url, pages, names = f"{BASE}/secrets?maxresults={page_size}", 0, []
    while url:
        page = get(url)
        pages += 1
        # An item's id is the vault's own URL (https://<vault>/secrets/<name>):
        # use its path with kvproxy, never the URL itself.
        page_names = [urllib.parse.urlsplit(item["id"]).path.rsplit("/", 1)[-1] for item in page["value"]]
        print(f"page {pages}: {', '.join(page_names)}")
        names += page_names
        url = page.get("nextLink")
    return names, pages


def main():
    print("db-password:", read_secret("db-password"))
    names, pages = list_secret_names()
    print(f"listed {len(names)} secrets in {pages} pages")
    try:
        read_secret("forbidden-rbac")
    except KvproxyError as e:
        print(f"forbidden-rbac: {e.status} {e.diagnosis}: {e.detail}")
    else:
        sys.exit("forbidden-rbac: expected a 403")


if __name__ == "__main__":
    main()

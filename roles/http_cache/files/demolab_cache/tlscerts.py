"""Leaf certificates signed by the lab CA, for offline HTTPS replay.

In offline mode there is no upstream certificate to copy, so the plugin
terminates TLS itself with a certificate for the requested host, signed by the
lab CA (the same CA that proxy.py uses for interception while recording).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import tempfile
import time

_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-:_\[\]]{1,253}$")


def leaf_cert_path(cert_dir: str, host: str) -> str:
    return os.path.join(cert_dir, "demolab-%s.pem" % host.replace(":", "_"))


def ensure_leaf_cert(
    host: str,
    cert_dir: str,
    ca_cert: str,
    ca_key: str,
    leaf_key: str,
    openssl: str = "openssl",
    days: int = 730,
) -> str:
    """Return the path of a cert for host (created once, atomically)."""
    if not _SAFE_HOST.match(host):
        raise ValueError("refusing to issue a certificate for %r" % host)
    path = leaf_cert_path(cert_dir, host)
    if os.path.isfile(path):
        return path
    os.makedirs(cert_dir, mode=0o700, exist_ok=True)
    try:
        ipaddress.ip_address(host.strip("[]"))
        san = "IP:%s" % host.strip("[]")
    except ValueError:
        san = "DNS:%s" % host
    common_name = host[:64]
    with tempfile.TemporaryDirectory(dir=cert_dir) as work:
        ext = os.path.join(work, "ext.cnf")
        with open(ext, "w", encoding="ascii") as fh:
            fh.write(
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=%s\n" % san,
            )
        csr = os.path.join(work, "leaf.csr")
        crt = os.path.join(work, "leaf.pem")
        run = {"check": True, "capture_output": True, "timeout": 20}
        subprocess.run(
            [openssl, "req", "-new", "-key", leaf_key, "-subj", "/CN=%s" % common_name, "-out", csr],
            **run,
        )
        serial = "%d%06d" % (time.time_ns(), os.getpid() % 1000000)
        subprocess.run(
            [
                openssl, "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                "-set_serial", serial, "-days", str(days), "-sha256",
                "-extfile", ext, "-out", crt,
            ],
            **run,
        )
        os.replace(crt, path)
    return path

"""Loopback ports and HTTP health checks that the providers share."""

import socket
import ssl
import urllib.request

from blackstart.clusters.provider import ClusterError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (also free for UDP, checked)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
        except OSError:
            continue
        return port
    raise ClusterError(f"no free port found on {host}")


def http_ok(
    url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0
) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            body = resp.read(200).decode(errors="replace").strip()
            return 200 <= resp.status < 300, body
    except Exception as err:  # any failure is "not healthy", with the reason
        return False, str(err)[:200]


def metrics_text(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2.0) as resp:
            return str(resp.read().decode(errors="replace"))
    except OSError:
        return ""

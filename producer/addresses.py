"""Which network addresses outbound calls (webhooks, download redirects) may reach.

Shared by producers (a literal internal address is refused at submit) and workers (every
resolved address is checked at delivery). Pure standard library: no I/O here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that mean "this machine" whatever DNS says (RFC 6761 reserves all of *.localhost).
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def parse_nets(spec: str) -> tuple[Network, ...]:
    """``GENQUEUE_OUTBOUND_ALLOW_NETS``: comma-separated CIDRs (a bare address is a /32 or
    /128); raises ``ValueError`` naming the bad entry."""
    out: list[Network] = []
    for item in (s.strip() for s in spec.split(",")):
        if item:
            try:
                out.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"not a CIDR network: {item!r}") from None
    return tuple(out)


def host_literal(host: str) -> IPAddress | None:
    """The address a host spelled as an IP literal stands for, in any spelling a resolver
    accepts (``127.1``, ``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``[::1]``); None for
    a name."""
    h = host.strip("[]").rstrip(".").lower()
    if "%" in h:  # an IPv6 zone id (fe80::1%eth0): link-local by construction
        h = h.split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    labels = h.split(".")
    if 1 <= len(labels) <= 4 and all(_NUMERIC_LABEL.fullmatch(x) for x in labels):
        try:  # inet_aton reads the BSD forms: octal, hex, and fewer than four parts
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def is_local_name(host: str) -> bool:
    """A name that means this machine, whatever any resolver answers (``localhost.``...)."""
    h = host.rstrip(".").lower()
    return h in _LOCAL_NAMES or h.endswith(".localhost")


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4, NAT64 or Teredo address carries to."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in n for n in _NAT64):
        return ipaddress.IPv4Address(ip.packed[-4:])
    return None


def refusal(ip: IPAddress, allow: Iterable[Network] = ()) -> str | None:
    """Why an outbound call must not reach ``ip`` (None: it may), unless ``allow`` names it."""
    if any(ip.version == n.version and ip in n for n in allow):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "IPv4-mapped IPv6 address"
        if ip.packed[:12] == bytes(12) and int(ip) > 1:
            return "IPv4-compatible IPv6 address"
        inner = _embedded_v4(ip)
        if inner is not None:
            why = refusal(inner, allow)
            return f"IPv6 address embedding an internal IPv4 ({why})" if why else None
    reason = (
        "unspecified" if ip.is_unspecified
        else "loopback" if ip.is_loopback
        else "link-local (cloud metadata)" if ip.is_link_local
        else "multicast" if ip.is_multicast
        else "carrier-grade NAT" if ip in _CGNAT
        else "private" if ip.is_private
        else "reserved" if ip.is_reserved
        else None
    )  # fmt: skip
    if reason is None and not ip.is_global:
        reason = "not globally routable"
    return reason


def url_refusal(url: str, allow: Iterable[Network] = ()) -> str | None:
    """What can be refused in a webhook URL before any lookup: scheme, userinfo, a host that
    is an internal address in any spelling or a local name, ``http`` to an address the
    operator did not allow. None: nothing yet (names are checked again at delivery)."""
    allow = tuple(allow)
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        _ = p.port  # a bad port raises here
    except ValueError:
        return "not a valid URL"
    if p.scheme not in ("http", "https") or not host:
        return "must be an http(s) URL with a host"
    if p.username is not None or p.password is not None or "@" in p.netloc:
        return "must not carry credentials (user:password@)"
    if is_local_name(host):
        return "names this machine (localhost)"
    ip = host_literal(host)
    if ip is not None:
        why = refusal(ip, allow)
        if why:
            return f"is an internal address ({why})"
        if p.scheme == "http" and not any(ip.version == n.version and ip in n for n in allow):
            return "http is allowed only to networks in GENQUEUE_OUTBOUND_ALLOW_NETS; use https"
    return None

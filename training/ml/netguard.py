"""Where a URL that a request names may connect: the guard against server-side request forgery.

A project admin registers model servers by URL, and the workers connect to them; without a guard
that URL could be the cloud's metadata service (169.254.169.254), the broker, the database or any
other host on the workers' network. So a host is resolved, and refused when any of its addresses is
loopback, link-local, private, shared (CGNAT), multicast, unspecified or otherwise not globally
routable, unless the operator's allow-list (CIDRs or host names) names it: a self-hosted vLLM on a
private network is the common case. The caller then connects to the address that was checked, so a
second DNS answer (DNS rebinding) cannot move the connection elsewhere.

Pure: no Django; the allow-list comes from the caller (the operator's settings).
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]  # (host, port) -> its addresses, as getaddrinfo gives them

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 behind the well-known NAT64 prefix
ALLOW_SETTING = "PAIRWISE_ENDPOINT_ALLOWED_NETWORKS"
HOW_TO_ALLOW = (f"the operator allows such hosts by naming them in {ALLOW_SETTING} "
                "(comma-separated CIDRs such as 10.0.0.0/8, or host names)")


class BlockedHost(ValueError):
    """The URL may not be connected to; the message says why and how the operator allows it."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class AllowList:
    """The operator's exceptions: networks whose addresses may be reached, and host names that may
    resolve to anything (an internal name whose address may change)."""
    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | Iterable[str] | None) -> AllowList:
        """From the setting's text: comma- or whitespace-separated CIDRs, addresses and host names."""
        items = text.replace(",", " ").split() if isinstance(text, str) else list(text or [])
        networks, hosts = [], set()
        for item in items:
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                hosts.add(_host_key(item))
        return cls(networks=tuple(networks), hosts=frozenset(h for h in hosts if h))

    def allows_host(self, host: str) -> bool:
        return _host_key(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        """The address, or the IPv4 one it carries (::ffff:10.0.0.1 goes to 10.0.0.1), is in a network."""
        candidates = [a for a in (address, _embedded_ipv4(address)) if a is not None]
        return any(a.version == net.version and a in net for a in candidates for net in self.networks)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), which is where it goes."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_kind(address: IPAddress) -> str | None:
    """What makes the address internal ('loopback', 'private', ...), or None for a public one."""
    inner = _embedded_ipv4(address)
    if inner is not None:
        return address_kind(inner)
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("private", address.is_private), ("reserved", address.is_reserved),
              ("not globally routable", not address.is_global))
    return next((kind for kind, hit in checks if hit), None)


def url_problem(url: str) -> str | None:
    """What is wrong with an http(s) base URL, before any DNS: None when its form is usable."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return "must start with http:// or https://"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return "is not a valid URL"
    if "?" in url or "#" in url:  # a query or a fragment would swallow the /chat/completions suffix
        return "may not contain ? or # (no query string or fragment)"
    if "@" in parts.netloc:
        return "may not contain credentials (user:password@); use api_key_env for a key"
    if not parts.hostname:
        return "has no host"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "may not contain spaces or control characters"
    return None


@dataclass(frozen=True)
class Target:
    """Where one request goes: the URL's parts and the checked address to connect to."""
    scheme: str
    host: str  # the name, for the Host header, TLS SNI and certificate checks
    port: int
    address: str  # the address that was checked: the connection goes here and nowhere else
    netloc: str  # host[:port] as in the URL: the Host header
    path: str


def _default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def url_target(url: str, *, allow: AllowList = AllowList(), resolver: Resolver = system_resolver) -> Target:
    """Resolve the URL's host once and check every address; the target to connect to. Raises
    BlockedHost (the reason, and how the operator allows it) or OSError when the host does not resolve."""
    problem = url_problem(url)
    if problem:
        raise BlockedHost(f"the URL {problem}")
    parts = urlsplit(url)
    host, port = parts.hostname or "", _default_port(parts)
    addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve")
    if not allow.allows_host(host):
        for address in addresses:  # every answer: an attacker's name may list an internal one second
            kind = address_kind(address)
            if kind and not allow.allows_address(address):
                shown = host if host == str(address) else f"{host} ({address})"
                raise BlockedHost(f"{shown} is a {kind} address; endpoints may not reach the server's own or "
                                  f"internal networks unless {HOW_TO_ALLOW}")
    return Target(scheme=parts.scheme, host=host, port=port, address=str(addresses[0]), netloc=parts.netloc,
                  path=parts.path or "/")


def url_check(url: str, *, allow: AllowList = AllowList(), resolver: Resolver = system_resolver) -> str | None:
    """Why the URL may not be used (for a form's field error), or None. A host the allow-list names
    is not resolved here: it may resolve only on the workers' network."""
    problem = url_problem(url)
    if problem:
        return problem
    if allow.allows_host(urlsplit(url).hostname or ""):
        return None
    try:
        url_target(url, allow=allow, resolver=resolver)
    except BlockedHost as exc:
        return str(exc)
    except (OSError, UnicodeError, ValueError):
        return f"the host {urlsplit(url).hostname} does not resolve here; {HOW_TO_ALLOW}"
    return None

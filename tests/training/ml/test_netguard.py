"""training.ml.netguard: which addresses a registered URL may reach, with an injected resolver (no DNS)."""
from __future__ import annotations

import ipaddress

import pytest

from training.ml.netguard import AllowList, BlockedHost, address_kind, url_check, url_problem, url_target


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.0.0.1", "private"), ("172.31.255.1", "private"),
    ("192.168.0.1", "private"), ("fd12::1", "private"), ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("100.64.0.1", "not globally routable"), ("240.0.0.1", "private"), ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::a9fe:a9fe", "link-local"), ("2002:7f00:1::", "loopback"),
    ("93.184.216.34", None), ("2606:4700::1111", None),
])
def test_address_kinds(address, kind):
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_the_allow_list_takes_cidrs_addresses_and_names():
    allow = AllowList.parse("10.0.0.0/8, 192.168.1.7 GPU-1.internal.,fd00::/8")
    assert allow.allows_address(ipaddress.ip_address("10.2.3.4")) and allow.allows_address(ipaddress.ip_address("192.168.1.7"))
    assert allow.allows_address(ipaddress.ip_address("::ffff:10.2.3.4"))  # the IPv4 it carries
    assert not allow.allows_address(ipaddress.ip_address("192.168.1.8"))
    assert allow.allows_host("gpu-1.internal") and not allow.allows_host("gpu-2.internal")


def test_targets_carry_the_checked_address_and_the_name():
    resolve = lambda host, port: ["10.0.0.9"]  # noqa: E731
    with pytest.raises(BlockedHost, match=r"vllm.lan \(10.0.0.9\) is a private address.*PAIRWISE_ENDPOINT_ALLOWED"):
        url_target("http://vllm.lan:8000/v1/chat/completions", resolver=resolve)
    target = url_target("http://vllm.lan:8000/v1/chat/completions", allow=AllowList.parse("10.0.0.0/8"), resolver=resolve)
    assert (target.address, target.host, target.port, target.netloc, target.path) == (
        "10.0.0.9", "vllm.lan", 8000, "vllm.lan:8000", "/v1/chat/completions")
    by_name = url_target("https://vllm.lan/v1", allow=AllowList.parse("vllm.lan"), resolver=resolve)
    assert by_name.address == "10.0.0.9" and by_name.port == 443


def test_url_forms_and_unresolvable_hosts():
    assert url_problem("https://api.example.com/v1") is None
    assert "? or #" in url_problem("https://api.example.com/v1?a=1")
    assert "credentials" in url_problem("https://u:p@api.example.com/v1")
    assert url_problem("https://api.example.com:99999/v1") == "is not a valid URL"

    def no_dns(host, port):
        raise OSError("no such host")

    assert "does not resolve here" in url_check("https://nowhere.example/v1", resolver=no_dns)
    assert url_check("https://gpu-1/v1", allow=AllowList.parse("gpu-1"), resolver=no_dns) is None  # the workers resolve it

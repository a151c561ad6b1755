"""The private network: bridge pgsbr0 with the gateway address, veth pairs into namespaces, the outsider.

The bridge does not forward (its forwarding sysctl is 0), and the root namespace routes the outsider's
address back onto the bridge, so no reply leaves by the machine's own network.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import TestbedError
from .processes import run
from .state import NetworkState, StateFile

BRIDGE = "pgsbr0"
OUTSIDER_NS = "pgs-outsider"
OUTSIDER_VETH = "pgsvo"
GUEST_IFACE = "eth0"  # name of the veth end inside every namespace


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def veth_names() -> list[str]:
    res = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=False)
    return [line.split(":", 2)[1].strip().split("@", 1)[0] for line in res.stdout.splitlines() if ":" in line]


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _sysctl_iface(iface: str, key: str, value: str, netns: str | None = None) -> None:
    path = f"/proc/sys/net/{key.replace('IFACE', iface)}"
    if netns:
        run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"])
    else:
        Path(path).write_text(value)


def veth_up(veth: str, netns: str) -> None:
    """Namespace + veth pair (host end on the bridge, 'eth0' inside), both up."""
    if not netns_exists(netns):
        run(["ip", "netns", "add", netns])
    if not link_exists(veth):
        if link_exists(GUEST_IFACE, netns):  # half-made earlier: start clean
            run(["ip", "-n", netns, "link", "del", GUEST_IFACE])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", GUEST_IFACE, "netns", netns])
    _sysctl_iface(veth, "ipv6/conf/IFACE/disable_ipv6", "1")
    _sysctl_iface(GUEST_IFACE, "ipv6/conf/IFACE/disable_ipv6", "1", netns)
    run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", netns, "link", "set", GUEST_IFACE, "up"])


def _bridge_up(net: NetworkState) -> None:
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    # No forwarding: guests' default route ends at the host, never leaves by eth0.
    _sysctl_iface(BRIDGE, "ipv4/conf/IFACE/forwarding", "0")
    # No IPv6 on the host side: nothing but the configured IPv4 on these links.
    _sysctl_iface(BRIDGE, "ipv6/conf/IFACE/disable_ipv6", "1")
    run(["ip", "addr", "replace", f"{net.gateway_ip}/{net.prefix}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    # Replies to the outsider go back onto the bridge, not out by the machine's default route.
    run(["ip", "route", "replace", f"{net.outsider_ip}/32", "dev", BRIDGE])


def _outsider_up(net: NetworkState) -> None:
    veth_up(OUTSIDER_VETH, OUTSIDER_NS)
    run(["ip", "-n", OUTSIDER_NS, "addr", "replace", f"{net.outsider_ip}/32", "dev", GUEST_IFACE])
    # On-link route to the private subnet: same L2 segment, no router involved.
    run(["ip", "-n", OUTSIDER_NS, "route", "replace", net.subnet, "dev", GUEST_IFACE])


class Network:
    """Brings the bridge and the outsider up; guests plug their own veths in (veth_up)."""

    def __init__(self, state: StateFile, claim_machine: Callable[[], None], log: Callable[[str], None]) -> None:
        self._state = state
        self._claim_machine = claim_machine
        self._log = log

    def up(self, subnet_cidr: str, gateway_ip: str, outsider_ip: str) -> None:
        """Bridge with the gateway address, plus the outsider namespace. Idempotent."""
        subnet = ipaddress.ip_network(subnet_cidr, strict=True)
        gw = ipaddress.ip_address(gateway_ip)
        outsider = ipaddress.ip_address(outsider_ip)
        if gw not in subnet:
            raise TestbedError(f"gateway {gw} is not in {subnet}")
        if outsider in subnet:
            raise TestbedError(f"outsider {outsider} must be outside {subnet}")
        want = NetworkState(
            subnet=str(subnet),
            prefix=subnet.prefixlen,
            gateway_ip=str(gw),
            outsider_ip=str(outsider),
            bridge=BRIDGE,
            outsider_ns=OUTSIDER_NS,
            outsider_veth=OUTSIDER_VETH,
        )
        self._claim_machine()
        t0 = time.monotonic()
        with self._state.edit() as state:
            have = state.network
            if have and have != want:
                raise TestbedError(f"a test bed with another network is up ({vars(have)}): call down() first")
            state.network = want
        with self._state.lock:
            _bridge_up(want)
            _outsider_up(want)
        took = time.monotonic() - t0
        self._log(f"network up: bridge {BRIDGE} {gw}/{subnet.prefixlen}, outsider {outsider} ({took:.2f} s)")

    @staticmethod
    def outsider(
        argv: Sequence[str], timeout: float = 30, check: bool = False, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv (host filesystem) inside the outsider namespace. Not raised on failure unless check."""
        return run(["ip", "netns", "exec", OUTSIDER_NS, *argv], check=check, timeout=timeout, input=stdin)

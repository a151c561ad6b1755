"""The local test bed itself (sandbox/testbed/): guests, outsider, S3, outage, reboot, teardown.

Needs root (namespaces, mounts, systemd-nspawn). The first run builds the guest rootfs with
debootstrap (about 1-2 minutes, cached in /var/cache/pgstack); later runs take seconds.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.testbed import OUTSIDER_NS, GuestSpec, Testbed

pytestmark = pytest.mark.integration

SUBNET = "10.0.1.0/24"
GATEWAY = "10.0.1.1"
OUTSIDER = "10.231.0.9"
GUESTS = [GuestSpec("g-a", "10.0.1.5"), GuestSpec("g-b", "10.0.1.6")]
IP = {g.name: g.ip for g in GUESTS}
BUCKET = "pgstack-testbed"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def bed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("the test bed needs root; CI=true, so this is a failure, not a skip")
        pytest.skip("the test bed needs root (namespaces, mounts, systemd-nspawn)")
    # Another test bed on this machine (a rehearsal, another test run) is waited for, not torn down.
    tb = Testbed(log=_log, lock_wait=1800)
    tb.down()  # leftovers of an earlier, aborted run
    with tb:
        tb.ensure_rootfs()
        tb.up(SUBNET, GATEWAY, OUTSIDER)
        tb.boot_guests(GUESTS)
        tb.start_s3()
        tb.create_bucket(BUCKET)
        yield tb


def _ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, f"rc={res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res.stdout


def test_ssh_runs_commands_in_each_guest(bed: Testbed) -> None:
    for g in GUESTS:
        assert _ok(bed.ssh(g.ip, "hostname")).strip() == g.name
        addrs = _ok(bed.ssh(g.ip, "ip -4 -o addr show dev eth0"))
        assert f"inet {g.ip}/24" in addrs


def test_sshd_is_active(bed: Testbed) -> None:
    assert _ok(bed.ssh(IP["g-a"], "systemctl is-active ssh")).strip() == "active"


def test_script_quoting_and_exit_code(bed: Testbed) -> None:
    res = bed.ssh(IP["g-a"], "set -eu\necho \"it's $((6 * 7))\" 'a  b'\nexit 3")
    assert res.returncode == 3
    assert res.stdout == "it's 42 a  b\n"


def test_stdin_is_passed_through(bed: Testbed) -> None:
    text = "line one\nzweite Zeile: äöü\n"
    assert _ok(bed.ssh(IP["g-b"], "cat", stdin=text.encode())) == text
    blob = bytes(range(256)) * 64
    digest = _ok(bed.ssh(IP["g-b"], "sha256sum | cut -d' ' -f1", stdin=blob)).strip()
    assert digest == hashlib.sha256(blob).hexdigest()


def test_outsider_connects_from_outside_the_subnet(bed: Testbed) -> None:
    _ok(bed.outsider(["bash", "-c", f"exec 3<>/dev/tcp/{IP['g-a']}/22"]))
    # Hold a connection open and look at it from the guest: its peer is the outsider's address.
    holder = subprocess.Popen(
        ["ip", "netns", "exec", OUTSIDER_NS, "bash", "-c",
         f"exec 3<>/dev/tcp/{IP['g-a']}/22 && head -c 4 <&3 && echo && exec sleep 20"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "SSH-"  # connected, banner read
        conns = _ok(bed.ssh(IP["g-a"], "ss -Htn state established '( sport = :22 )'"))
    finally:
        holder.kill()
        holder.wait()
    peers = {line.split()[-1].rsplit(":", 1)[0] for line in conns.splitlines() if line.strip()}
    assert OUTSIDER in peers, conns
    assert ipaddress.ip_address(OUTSIDER) not in ipaddress.ip_network(SUBNET)


def test_guests_reach_each_other(bed: Testbed) -> None:
    _ok(bed.ssh(IP["g-a"], f"ping -c1 -W2 {IP['g-b']}"))
    _ok(bed.ssh(IP["g-b"], f"ping -c1 -W2 {IP['g-a']}"))


def test_netns_exec_runs_host_tools_in_a_guest_network(bed: Testbed) -> None:
    out = _ok(bed.netns_exec("g-b", ["bash", "-c", f"exec 3<>/dev/tcp/{IP['g-a']}/22 && head -c 4 <&3"]))
    assert out == "SSH-"


def _pgbackrest(bed: Testbed, verify: bool) -> str:
    """A pgBackRest command line against the test bed's S3 (secrets via the environment)."""
    ep = bed.s3_endpoint()
    tls = (
        f"--repo1-s3-endpoint={ep.dns_name} --repo1-storage-ca-file=/root/s3-ca.crt"
        if verify
        else f"--repo1-s3-endpoint={ep.host} --repo1-storage-verify-tls=n"
    )
    return (
        # As root, which pgBackRest 2.59 and later refuse unless told: this probes the store only.
        "PGBACKREST_ALLOW_ROOT=y "
        f"PGBACKREST_REPO1_S3_KEY={ep.access_key} PGBACKREST_REPO1_S3_KEY_SECRET={ep.secret_key} "
        f"pgbackrest --repo1-type=s3 {tls} --repo1-storage-port={ep.port} --repo1-s3-uri-style=path "
        f"--repo1-s3-bucket={BUCKET} --repo1-s3-region={ep.region} --repo1-path=/ "
        "--log-level-console=warn --log-level-file=off"
    )


def test_pgbackrest_in_a_guest_reaches_s3(bed: Testbed) -> None:
    ep = bed.s3_endpoint()
    bed.s3_client().put_object(Bucket=BUCKET, Key="probe/hello.txt", Body=b"hello from the host\n")
    listing = _ok(bed.ssh(IP["g-a"], f"curl -ksS --max-time 10 https://{GATEWAY}:9443/"))
    assert f"<Name>{BUCKET}</Name>" in listing
    # pgBackRest over TLS without verification (IP endpoint) and with it (DNS name + the CA file).
    assert _ok(bed.ssh(IP["g-a"], _pgbackrest(bed, verify=False) + " repo-ls")).split() == ["probe"]
    _ok(bed.ssh(IP["g-a"], "cat > /root/s3-ca.crt", stdin=Path(ep.ca_file).read_bytes()))
    got = _ok(bed.ssh(IP["g-a"], _pgbackrest(bed, verify=True) + " repo-get probe/hello.txt"))
    assert got == "hello from the host\n"


def test_s3_outage_and_recovery_keep_the_data(bed: Testbed) -> None:
    client = bed.s3_client()
    client.put_object(Bucket=BUCKET, Key="outage/before.txt", Body=b"still here\n")
    probe = f"curl -ksS --max-time 5 -o /dev/null -w '%{{http_code}}' https://{GATEWAY}:9443/{BUCKET}"
    assert _ok(bed.ssh(IP["g-b"], probe)) == "200"
    bed.s3_outage(True)
    try:
        res = bed.ssh(IP["g-b"], probe)
        assert res.returncode != 0, res.stdout
    finally:
        bed.s3_outage(False)
    assert _ok(bed.ssh(IP["g-b"], probe)) == "200"
    body = client.get_object(Bucket=BUCKET, Key="outage/before.txt")["Body"].read()
    assert body == b"still here\n"
    got = _ok(bed.ssh(IP["g-b"], _pgbackrest(bed, verify=False) + " repo-get outage/before.txt"))
    assert got == "still here\n"


def test_reboot_brings_the_guest_back_with_its_disk(bed: Testbed) -> None:
    ip = IP["g-b"]
    _ok(bed.ssh(ip, "echo disk > /var/tmp/pgs-marker && echo ram > /run/pgs-marker"))
    bed.reboot_guest("g-b")
    assert _ok(bed.ssh(ip, "hostname")).strip() == "g-b"
    assert _ok(bed.ssh(ip, "systemctl is-active ssh")).strip() == "active"
    assert _ok(bed.ssh(ip, "cat /var/tmp/pgs-marker")) == "disk\n"  # the overlay persisted
    assert bed.ssh(ip, "test -e /run/pgs-marker").returncode == 1  # /run is fresh: a real boot


def test_killed_guest_boots_fresh(bed: Testbed) -> None:
    ip = IP["g-a"]
    _ok(bed.ssh(ip, "echo ram > /run/pgs-marker"))
    bed.kill_guest("g-a")
    assert bed.ssh(ip, "true", timeout=30).returncode != 0  # nothing answers: the whole guest is gone
    bed.boot_guest(GuestSpec("g-a", ip))
    assert _ok(bed.ssh(ip, "hostname")).strip() == "g-a"
    assert bed.ssh(ip, "test -e /run/pgs-marker").returncode == 1  # a new boot answers, not a survivor


def test_down_leaves_nothing(bed: Testbed) -> None:
    state = json.loads(bed.state_file.read_text())
    pids = [g["pid"] for g in state["guests"].values()]
    pids += [state["s3"]["moto_pid"], state["s3"]["relay_pid"]]
    merged = [g["merged"] for g in state["guests"].values()]
    assert all(pids)
    bed.down()

    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "pgs-" not in netns
    veths = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, check=True)
    assert "pgsv" not in veths.stdout
    bridge = subprocess.run(["ip", "link", "show", "dev", "pgsbr0"], capture_output=True, text=True, check=False)
    assert bridge.returncode != 0
    mounts = subprocess.run(["findmnt", "-rno", "TARGET"], capture_output=True, text=True, check=True).stdout
    for m in merged:
        assert m not in mounts
    assert str(bed.run_dir) not in mounts
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still exists"
    assert not bed.run_dir.exists()
    for hierarchy in ("systemd", "unified", ""):
        assert not Path("/sys/fs/cgroup", hierarchy, "pgstack-sandbox").exists()
    route = subprocess.run(["ip", "route", "show", OUTSIDER], capture_output=True, text=True, check=True)
    assert route.stdout.strip() == ""
    bed.down()  # idempotent: nothing left to do, and no error

"""Local test bed for a rehearsal: guest machines and S3 object storage on this machine only.

What it builds (as root, Debian bookworm host), one module per job:
- rootfs: a guest root filesystem made once by debootstrap (cached under cache_dir, keyed by its package list);
- network: a bridge "pgsbr0" in the root network namespace holding the private network's gateway address,
  and an "outsider" namespace on the same bridge with an address outside the private subnet
  (on-link routes both ways), to prove that access rules reject it;
- guests: per guest, a network namespace with a veth on the bridge, an overlayfs copy of the rootfs, and
  systemd-nspawn booting real systemd in it (sshd, PostgreSQL and timers work as on a server);
- s3: moto (in memory) behind a TCP relay on gateway:9443, so an outage can be simulated without
  losing moto's data (see s3_outage);
- lock (one test bed per machine), processes (commands and children), mounts, cgroups;
- state: everything is recorded in run_dir/state.json before it is created, so teardown
  (`Testbed().down()` in a fresh process) can take it all down again, even after a crash half way;
- facade: Testbed, the object callers use.

Traffic only ever goes to loopback and the namespaces created here: the bridge does not forward
(its forwarding sysctl is set to 0), and the root namespace routes the outsider's address back
onto the bridge so no reply leaves by the machine's own network.
"""

from .errors import TestbedError
from .facade import Testbed
from .guests import GuestSpec
from .network import OUTSIDER_NS
from .s3 import S3Endpoint

__all__ = ["OUTSIDER_NS", "GuestSpec", "S3Endpoint", "Testbed", "TestbedError"]

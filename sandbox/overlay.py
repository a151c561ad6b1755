"""The rehearsal's config overlay: the short, named list of keys it changes, in one place.

Everything else comes from the stack file unchanged. The keys below are printed in the
report, and `pgstack:sandbox` is refused by config outside the sandbox.
"""

from __future__ import annotations

import json
from typing import Any

# key -> why the rehearsal changes it
OVERRIDDEN = {
    "pgstack:sandbox.packageSource": "guests have no internet: PostgreSQL comes from Debian, not apt.postgresql.org",
    "pgstack:sandbox.s3VerifyTls": "the local S3 has a self-signed certificate",
    "pgstack:sandbox.s3Port": "the local S3 listens on a high port",
    "pgstack:backup.endpoint": "object storage is moto on the bridge's gateway address",
    "pgstack:backup.region": "moto's region",
    "pgstack:backup.archiveTimeoutSeconds": "test scale: 10 s, so archiving checks wait seconds, not a minute",
    "pgstack:sshPrivateKey": "the harness's key (the mocks connect with it)",
    "pgstack:s3AccessKey": "moto's dummy credentials",
    "pgstack:s3SecretKey": "moto's dummy credentials",
    "pgstack:sandbox.alertsVerifyTls": "the local Healthchecks receiver has a self-signed certificate",
    "pgstack:alerts.pingUrl": "heartbeats go to the local Healthchecks receiver on the bridge's gateway address",
    "pgstack:alerts.apiUrl": "the checks are made on the local receiver",
    "pgstack:alertsPingKey": "the receiver's ping key",
    "pgstack:alertsApiKey": "the receiver's API key",
    "pgstack:monitoring.receivers": "no SMTP server here: the monitoring server's alerts go to the webhook only",
    "pgstack:monitoringWebhookUrl": "Alertmanager posts to the local receiver's webhook endpoint",
}


def apply(
    raw: dict[str, Any],
    s3_host: str,
    s3_port: int,
    s3_region: str,
    keys: dict[str, str],
    alerts: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return a copy of the engine-form config (objects as JSON text) with the overlay applied.

    alerts: the receiver's pingUrl, apiUrl and webhookUrl, for a stack with an alerts block (its keys come in
    `keys`); pingUrl and apiUrl go into the alerts block.
    """
    out = dict(raw)
    sandbox: dict[str, Any] = {"packageSource": "distro", "s3VerifyTls": False, "s3Port": s3_port}
    if alerts is not None and "pgstack:alerts" in out:
        sandbox["alertsVerifyTls"] = False
        block = json.loads(out["pgstack:alerts"])
        block.update({k: alerts[k] for k in ("pingUrl", "apiUrl")})
        out["pgstack:alerts"] = json.dumps(block)
    if alerts is not None and "pgstack:monitoring" in out:
        monitoring = json.loads(out["pgstack:monitoring"])
        if monitoring.get("server"):
            monitoring["receivers"] = {}
            out["pgstack:monitoring"] = json.dumps(monitoring)
            out["pgstack:monitoringWebhookUrl"] = alerts["webhookUrl"]
    out["pgstack:sandbox"] = json.dumps(sandbox)
    if "pgstack:backup" in out:
        backup = json.loads(out["pgstack:backup"])
        backup.update({"endpoint": s3_host, "region": s3_region, "archiveTimeoutSeconds": 10})
        out["pgstack:backup"] = json.dumps(backup)
    out.update(keys)
    return out


def describe() -> list[dict[str, str]]:
    return [{"key": k, "why": v} for k, v in OVERRIDDEN.items()]

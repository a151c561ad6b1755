"""BackupBucket: the pgBackRest repository on Hetzner Object Storage (S3), and its passphrase.

Reached through an aws.Provider pointed at the Hetzner endpoint (credential, region and account
checks skipped; path-style addressing). Private, and without lifecycle rules: retention is
pgBackRest's job, and a lifecycle rule that deletes WAL breaks the backups that need it.
The bucket and the passphrase outlive the servers (retainOnDelete): `pulumi destroy` of a
server, or of the stack, never takes the backups or the key that opens them.

The passphrase is generated once per stack, unless the stack adopts an existing repository
(pgstack:backupCipherPassphrase): then that one is used. The generated one stays registered
either way, so its value is never dropped from state by setting or unsetting the key.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random


@dataclass
class BackupBucketArgs:
    bucket: str
    endpoint: str  # host[:port]
    region: str
    repo_path: str
    access_key: pulumi.Input[str]
    secret_key: pulumi.Input[str]
    labels: dict[str, str]
    # An existing repository's passphrase (pgstack:backupCipherPassphrase); None: the generated one.
    cipher_pass: pulumi.Input[str] | None = None


class BackupBucket(pulumi.ComponentResource):
    def __init__(self, name: str, args: BackupBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pgstack:backup_bucket:BackupBucket", name, None, opts)
        retained = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        self.provider = aws.Provider(
            f"{name}-s3",
            region="us-east-1",  # a placeholder the S3 API of Hetzner ignores; the endpoint decides
            access_key=pulumi.Output.secret(args.access_key),
            secret_key=pulumi.Output.secret(args.secret_key),
            skip_credentials_validation=True,
            skip_region_validation=True,
            skip_requesting_account_id=True,
            skip_metadata_api_check=True,
            s3_use_path_style=True,
            endpoints=[aws.ProviderEndpointArgs(s3=f"https://{args.endpoint}")],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.bucket = aws.s3.Bucket(
            name,
            bucket=args.bucket,
            # Never empty a bucket of backups to delete it.
            force_destroy=False,
            tags=args.labels,
            opts=pulumi.ResourceOptions.merge(retained, pulumi.ResourceOptions(provider=self.provider)),
        )
        # pgBackRest encrypts every repository file with this (aes-256-cbc), unless the stack adopts a
        # repository. Generated once and never regenerated: no keepers, later input edits ignored.
        passphrase = random.RandomPassword(
            f"{name}-cipher",
            length=64,
            special=False,
            opts=pulumi.ResourceOptions.merge(
                retained,
                pulumi.ResourceOptions(
                    additional_secret_outputs=["result"],
                    ignore_changes=["length", "special", "upper", "lower", "numeric", "keepers"],
                ),
            ),
        )
        self.cipher_pass = pulumi.Output.secret(passphrase.result if args.cipher_pass is None else args.cipher_pass)
        self.repository = pulumi.Output.concat("s3://", self.bucket.bucket, args.repo_path)
        self.register_outputs({"repository": self.repository})

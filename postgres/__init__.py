"""The PostgreSQL domain: what a server's files and role SQL say, as pure functions.

postgresql.conf layers (`conf`), pg_hba rules (`hba`), the role model's SQL (`roles`), the
pgBackRest config (`pgbackrest`) and the per-version layout (`layout`). Nothing here imports
Pulumi or `config` (a test checks the import graph), so every renderer is tested directly and
both targets, and the config rules, can use them.
"""

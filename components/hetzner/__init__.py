"""Target hetzner: a private network, servers configured over SSH, pgBackRest to object storage."""

"""Target aws: PostgreSQL on RDS, alarms and Route53 (seed 001)."""

"""Where a PostgreSQL major version lives on a Debian/Ubuntu server, and what RDS calls it.

The one table keyed by the major version: the config key `postgres.version` selects a row, and
every path, unit name, package name and parameter group family comes from it. Debian 12 (the
rehearsal's guests) and Ubuntu 24.04 (production) share postgresql-common's layout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    version: int

    @property
    def bin_dir(self) -> str:
        return f"/usr/lib/postgresql/{self.version}/bin"

    @property
    def conf_dir(self) -> str:
        return f"/etc/postgresql/{self.version}/main"

    @property
    def data_dir(self) -> str:
        return f"/var/lib/postgresql/{self.version}/main"

    @property
    def log_file(self) -> str:
        return f"/var/log/postgresql/postgresql-{self.version}-main.log"

    @property
    def unit(self) -> str:
        return f"postgresql@{self.version}-main"

    @property
    def packages(self) -> tuple[str, ...]:
        return (f"postgresql-{self.version}", f"postgresql-client-{self.version}")

    @property
    def rds_family(self) -> str:
        return f"postgres{self.version}"


# Versions pgstack is tested on. Adding one is a row here plus its VERSION_SETTINGS in conf.py.
LAYOUTS: dict[int, Layout] = {15: Layout(15)}
SUPPORTED_VERSIONS: tuple[int, ...] = tuple(sorted(LAYOUTS))


def layout(version: int) -> Layout:
    try:
        return LAYOUTS[version]
    except KeyError:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise ValueError(f"PostgreSQL {version} is not supported; pgstack supports {supported}") from None

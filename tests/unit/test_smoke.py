from tests.conftest import run_stack

SERVER = "hcloud:index/server:Server"


def test_prod_registers_primary_and_replica_servers():
    result = run_stack("prod")
    names = sorted(r.name for r in result.mocks.of_type(SERVER))
    assert names == ["prod-g1-primary", "prod-g1-replica-1", "prod-monitoring"]

import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/sim" in str(item.fspath) and item.name != "test_sweep":
            item.add_marker(pytest.mark.timeout(300))  # the opt-in sweep runs for hours


@pytest.fixture
def sweep_size() -> int:
    return int(os.environ.get("ESNODE_SIM_SWEEP", "0"))

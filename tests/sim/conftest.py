import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/sim" in str(item.fspath):
            item.add_marker(pytest.mark.timeout(300))


@pytest.fixture
def sweep_size() -> int:
    return int(os.environ.get("ESNODE_SIM_SWEEP", "0"))

import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/sim" in str(item.fspath):
            # the opt-in sweep runs for hours: no timeout (0) for it
            item.add_marker(pytest.mark.timeout(0 if item.name == "test_sweep" else 300))


@pytest.fixture
def sweep_size() -> int:
    return int(os.environ.get("ESNODE_SIM_SWEEP", "0"))

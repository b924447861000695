"""Test doubles shared by the test tiers: an in-process network, a faulty one, and an
in-process cluster built from them (see ``inproc.py`` and ``cluster.py``)."""

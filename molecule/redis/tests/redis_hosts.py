"""Hosts of the redis scenario by what they run (molecule.yml, converge.yml).

Tests take a fixture over these (``node``: each redis-server, ``sentinel``:
each sentinel) in place of testinfra's ``host``, which would be every host.
Not a conftest.py: the tests import the shared molecule/conftest.py as
``conftest``."""

from __future__ import annotations

import os

import testinfra

MASTER = "trunkline-redis-master"  # redis_sentinel_initial_master
REPLICA = "trunkline-redis-replica"
SENTINEL_ONLY = "trunkline-redis-sentinel"
DATA_NODES = (MASTER, REPLICA)
SENTINELS = (MASTER, REPLICA, SENTINEL_ONLY)


def get_host(name: str):
    return testinfra.get_host(
        f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}"
    )

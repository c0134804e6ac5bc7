"""Every fixture the tests share is defined once, in the modules below; plain helpers (wait_for, free_port, git,
run_lfops, need_service) are in tests/helpers.py, whole-state snapshots in tests/snapshots.py."""

from __future__ import annotations

pytest_plugins = [
    "tests.workspace_fixtures",  # env, any_db_env, template_workspace, pg_database
    "tests.k8s_fixtures",  # k8s_cluster, k8s_ns: the control plane of k8s/dev/cluster.sh
]

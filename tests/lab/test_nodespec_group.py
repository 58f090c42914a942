"""Each lab run's nodes join one group whose secret is a file in their data dir (never on a
command line or in the environment, which `docker inspect` shows)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lab.nodespec import GROUP_SECRET_FILE, NodeSpec


def test_nodes_join_the_run_group_through_a_secret_file(tmp_path: Path) -> None:
    spec = NodeSpec("n1", ["lan"])
    data = spec.make_data_dir(tmp_path, "s3cr3t-of-this-run")
    secret = data / GROUP_SECRET_FILE
    assert secret.read_text().strip() == "s3cr3t-of-this-run"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    line = spec.command_line("tok", group=True)
    assert line[line.index("--group") + 1] == f"lab:@/data/{GROUP_SECRET_FILE}"
    assert not any("s3cr3t" in arg for arg in line)
    assert "--group" not in spec.command_line("tok")  # group=False: as before


def test_a_scenario_group_comes_on_top_of_the_run_group(tmp_path: Path) -> None:
    spec = NodeSpec("n1", ["lan"], args=["--group", "swarm:@/data/x"])
    line = spec.command_line("tok", group=True)
    assert line.count("--group") == 2 and "swarm:@/data/x" in line
    named_lab = NodeSpec("n1", ["lan"], args=["--group", "lab:@/data/x"])
    assert named_lab.command_line("tok", group=True).count("--group") == 1

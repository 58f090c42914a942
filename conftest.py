"""pytest at the repository's root: the lab's plugin turns every scenarios/*.yaml into a test
(lab/plugin.py). Declared here, in the root conftest, so it is active for every way pytest is
started in this repository (`pytest lab`, `pytest scenarios/x.yaml`, xdist workers)."""

pytest_plugins = ["lab.plugin"]

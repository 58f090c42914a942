"""Release tools (not part of the wheel): tools/make_pyz.py, tools/check_dist.py."""

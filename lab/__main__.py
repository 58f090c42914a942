"""`python3 -m lab COMMAND`: the lab's entry point.

    image               build (once) the base and node images, print their tags
    clean [--stale]     remove every lab container, network and swarm service (io.mole.lab=1)
                        and old node images; --stale: only those of runs whose process is dead
    run [--swarm] FILE...  run scenario files (--swarm: as Docker Swarm services)
    report DIR...       (re)build each run's report.html; several: also a comparison page
    demo [-d|--detach]  the 4-node compose demo; `demo down` stops it (other words go to compose)
    test [ARGS...]      every test: `python -m pytest -n auto ARGS`, images built first
    env                 print the Python that runs the lab (installing what it lacks)

Outside a virtual environment every command runs under the project venv `<repo>/.venv`
(created on first use); inside one, under it. `lab.bootstrap` installs the repo's `lab` and
`dev` extras there when something is missing. Only the standard library is imported before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lab import bootstrap

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "compose.yaml"
# The compose project of the demo; MOLE_DEMO_PROJECT lets a test run its own next to a user's.
DEMO_PROJECT = os.environ.get("MOLE_DEMO_PROJECT") or "mole-demo"


def usage() -> str:
    return (__doc__ or "").split("\n\n")[1].rstrip() + "\n"


def compose_command() -> list[str]:
    """`docker-compose` (v1) or `docker compose` (v2), whichever this machine has."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("lab: neither `docker compose` nor `docker-compose` is installed")


def cmd_image(_args: list[str]) -> int:
    from lab import image

    return image.main()


def cmd_clean(args: list[str]) -> int:
    from lab import cluster, image, swarm

    stale = "--stale" in args
    # Services and swarm bridges first: their containers and configuration networks go next.
    swept = 0 if cluster.docker_unavailable() else swarm.sweep(everything=not stale)
    print(swept + cluster.sweep(everything=not stale))
    if not cluster.docker_unavailable() and swarm.release_unused():
        print("lab: left the swarm a dead lab run had made", file=sys.stderr)
    if not stale and not cluster.docker_unavailable():
        pruned = image.prune_node_images()
        print(f"lab: removed {pruned} old node image tag(s)", file=sys.stderr)
    return 0


def cmd_run(args: list[str]) -> int:
    from lab import runner

    return int(runner.main_run(args) or 0)


def cmd_report(args: list[str]) -> int:
    from lab import report

    return report.main(args)


def cmd_demo(args: list[str]) -> int:
    compose = compose_command()
    # compose.yaml needs the demo's group secret to parse at all; a fresh random one (for
    # `down`, `ps`, `logs` it is unused; for `up` it is the demo's secret).
    os.environ.setdefault("MOLE_DEMO_SECRET", os.urandom(16).hex())
    options = [
        "-f", str(COMPOSE_FILE),
        "--project-directory", str(REPO),
        "-p", DEMO_PROJECT,
    ]  # fmt: skip
    if args and args[0] == "token":
        from lab import demo

        return demo.print_tokens(compose, options, COMPOSE_FILE, args[1:])
    if args and not args[0].startswith("-"):
        argv = [*compose, *options, *args]  # down, ps, logs ...: straight to compose
        print(f"lab: {' '.join(argv)}", file=sys.stderr, flush=True)
        os.execvp(argv[0], argv)
    from lab import demo, image

    image.ensure_node_image()  # compose then finds mole-node:latest and never builds
    detach = [a for a in args if a in ("-d", "--detach")]
    rest = [a for a in args if a not in ("-d", "--detach")]
    up = ["--no-build", *(["-d"] if detach else []), *rest]
    return demo.run_up(compose, options, up, COMPOSE_FILE)


def cmd_test(args: list[str]) -> int:
    from lab import cluster, image

    reason = cluster.docker_unavailable()
    env = dict(os.environ)
    if reason:
        print(f"lab: WARNING: no Docker ({reason}); lab tests will be skipped", file=sys.stderr)
    else:
        # Built here once, so parallel workers find it ready.
        env["MOLE_NODE_IMAGE"] = image.ensure_node_image()
    why = bootstrap.ensure_browser()  # the dashboard's browser tests
    if why:
        print(f"lab: WARNING: no browser ({why}); browser tests will be skipped", file=sys.stderr)
    parallel = any(
        a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=")) for a in args
    )
    no_xdist = any(a in ("no:xdist", "-pno:xdist") for a in args)
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *([] if parallel or no_xdist else ["-n", "auto"]),
        *args,
    ]
    try:
        Path.cwd().relative_to(REPO)
    except ValueError:
        os.chdir(REPO)  # pytest then picks up pyproject.toml's testpaths
    print(f"lab: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    os.execve(sys.executable, argv, env)


def cmd_env(_args: list[str]) -> int:
    # bootstrap has run: this is the project venv's Python (or the active venv's), complete.
    print(sys.executable)
    return 0


COMMANDS = {
    "image": cmd_image,
    "clean": cmd_clean,
    "run": cmd_run,
    "report": cmd_report,
    "demo": cmd_demo,
    "test": cmd_test,
    "env": cmd_env,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        sys.stderr.write(f"lab: unknown command {argv[0]!r}\n" + usage())
        return 2
    bootstrap.ensure_environment(argv)
    from lab.cluster import LabError

    try:
        return command(argv[1:])
    except LabError as e:
        print(f"lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""lab.image: apt source discovery, the content-hashed node tag, build-once under concurrency."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import cluster, image

REPO = Path(__file__).resolve().parents[2]
needs_docker = pytest.mark.skipif(
    cluster.docker_unavailable() is not None,
    reason=f"Docker not reachable: {cluster.docker_unavailable()}",
)


# --------------------------------------------------------------------------- apt sources


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_apt_sources_deb822_one_line_and_disabled(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list.d" / "debian.sources",
        "Types: deb\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "Enabled: no\n"
        "URIs: http://disabled.example/debian\n"
        "Suites: trixie\n"
        "Components: main\n",
    )
    write(
        tmp_path / "sources.list.d" / "extra.list",
        "# a comment\n"
        "deb-src http://src.example/debian trixie main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian trixie main contrib\n",
    )
    write(tmp_path / "sources.list.d" / "old.list.disabled", "deb http://x.example/d sid main\n")
    write(tmp_path / "sources.list", "deb http://legacy.example/debian bullseye main\n")

    srcs = image.apt_sources(tmp_path)
    assert [s.uri for s in srcs] == [
        "http://legacy.example/debian",
        "http://mirror.example/debian",
        "http://one.example/debian",
    ]
    assert image.debian_mirror("bookworm", tmp_path) == image.AptSource(
        "http://mirror.example/debian",
        ("bookworm", "bookworm-updates"),
        ("main",),
        "/usr/share/keyrings/debian-archive-keyring.gpg",
    )
    assert image.debian_mirror("trixie", tmp_path).uri == "http://one.example/debian"
    assert image.debian_mirror("trixie", tmp_path).signed_by == "/k.gpg"
    assert image.debian_mirror("bullseye", tmp_path).uri == "http://legacy.example/debian"
    with pytest.raises(cluster.LabError, match="sid"):
        image.debian_mirror("sid", tmp_path)


# --------------------------------------------------------------------------- node tag


@pytest.fixture
def node_copy(tmp_path: Path) -> Path:
    """A private copy of node/ (and the Dockerfile) that a test may change."""
    dst = tmp_path / "src"
    shutil.copytree(REPO / "node", dst / "node", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "lab" / "Dockerfile", dst / "Dockerfile")
    return dst


def test_node_tag_covers_node_files_dockerfile_and_base(node_copy: Path) -> None:
    node, dockerfile = node_copy / "node", node_copy / "Dockerfile"

    def tag(base: str = "sha256:base") -> str:
        return image.node_image_tag(base, node, dockerfile)

    first = tag()
    assert first.startswith("mole-node:") and len(first.split(":")[1]) == 16
    assert tag() == first
    (node / "__pycache__").mkdir()
    (node / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    assert tag() == first  # byte-code is not part of the image's identity

    original = (node / "errors.py").read_bytes()
    (node / "errors.py").write_bytes(original + b"\n# changed\n")
    assert tag() != first
    (node / "errors.py").write_bytes(original)
    assert tag() == first
    (node / "extra.py").write_text("")
    assert tag() != first
    (node / "extra.py").unlink()

    assert tag("sha256:other") != first
    dockerfile.write_text(dockerfile.read_text() + "\n# changed\n")
    assert tag() != first


# --------------------------------------------------------------------------- building


@pytest.fixture
def test_repo() -> Iterator[str]:
    """A throwaway image repository name (tests remove the tags they build)."""
    repo = f"mole-node-test-{uuid.uuid4().hex[:8]}"
    yield repo
    cluster.remove_image(f"{repo}:latest")


@needs_docker
@pytest.mark.lab
def test_built_once_then_rebuilt_when_node_changes(
    node_copy: Path, test_repo: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    builds: list[str] = []
    real_build = cluster.build_image

    def counting_build(ctx: Path, tag: str, buildargs: dict[str, str] | None = None) -> str:
        builds.append(tag)
        return real_build(ctx, tag, buildargs)

    monkeypatch.setattr(cluster, "build_image", counting_build)
    node, dockerfile = node_copy / "node", node_copy / "Dockerfile"

    def ensure() -> str:
        return image.ensure_node_image(
            node_dir=node, dockerfile=dockerfile, repo=test_repo, latest=False
        )

    try:
        first = ensure()
        assert cluster.image_exists(first) and builds == [first]
        assert ensure() == first and builds == [first]  # cached: no second build
        assert not cluster.image_exists(f"{test_repo}:latest")

        (node / "lab_marker.py").write_text("MARK = 'changed'\n")
        second = ensure()
        assert second != first and builds == [first, second]

        # The new image holds the changed node/, compiled, and runs it with PYTHONPATH set.
        with cluster.Cluster(f"t{uuid.uuid4().hex[:10]}", image=second, workdir=tmp_path) as c:
            c.add_network("lan")
            sleep = ["python3", "-c", "import time; time.sleep(600)"]
            c.create_nodes([cluster.NodeSpec("img", ["lan"], entrypoint=sleep, command=[])])
            code, out = c.exec(
                "img", ["python3", "-c", "import node.lab_marker as m; print(m.MARK)"]
            )
            assert (code, out) == (0, "changed\n")
            code, out = c.exec("img", ["sh", "-c", "command -v ip iptables tc >/dev/null; echo $?"])
            assert out == "0\n"
    finally:
        for t in builds:
            cluster.remove_image(t)


@needs_docker
@pytest.mark.lab
def test_parallel_processes_build_once(node_copy: Path, test_repo: str) -> None:
    """What pytest-xdist does: several processes ask for the same missing image at once."""
    (node_copy / "node" / "lab_marker.py").write_text(f"MARK = {uuid.uuid4().hex!r}\n")
    code = (
        "import sys; from pathlib import Path; from lab import image; "
        "print(image.ensure_node_image(node_dir=Path(sys.argv[1]), "
        "dockerfile=Path(sys.argv[2]), repo=sys.argv[3], latest=False))"
    )
    argv = [sys.executable, "-c", code, str(node_copy / "node"), str(node_copy / "Dockerfile")]
    procs = [
        subprocess.Popen(
            [*argv, test_repo], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    tags = {out.strip() for out, _ in results}
    try:
        assert all(p.returncode == 0 for p in procs), [err for _, err in results]
        assert len(tags) == 1
        built = [err for _, err in results if "built mole-node-test" in err]
        assert len(built) == 1, [err for _, err in results]
    finally:
        for t in tags:
            if t:
                cluster.remove_image(t)


def tiny_image(tag: str) -> None:
    """A one-file image of its own (so removing its only tag removes the image)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("id")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    cluster.import_rootfs(buf, tag)


@needs_docker
@pytest.mark.lab
def test_prune_keeps_latest_and_images_in_use(test_repo: str, tmp_path: Path) -> None:
    node = image.ensure_node_image()
    cluster.tag_image(node, f"{test_repo}:latest")
    cluster.tag_image(node, f"{test_repo}:current")  # same image as :latest
    tiny_image(f"{test_repo}:old")
    tiny_image(f"{test_repo}:busy")
    try:
        with cluster.Cluster(
            f"t{uuid.uuid4().hex[:10]}", image=f"{test_repo}:busy", workdir=tmp_path
        ) as c:
            c.add_network("lan")
            c.create_nodes([cluster.NodeSpec("b", ["lan"], command=["x"], start=False)])
            assert image.prune_node_images(test_repo) == 1  # :old; :busy has a container
            assert cluster.image_tags(test_repo) == [
                f"{test_repo}:{t}" for t in ("busy", "current", "latest")
            ]
        assert image.prune_node_images(test_repo) == 1
        assert cluster.image_tags(test_repo) == [f"{test_repo}:current", f"{test_repo}:latest"]
        assert cluster.image_id(node) is not None
    finally:
        for t in ("current", "old", "busy"):
            cluster.remove_image(f"{test_repo}:{t}")


# --------------------------------------------------------------------------- bootstrap


def test_lab_entry_point_imports_nothing_third_party_before_bootstrap() -> None:
    code = (
        "import sys, lab.__main__ as m\n"
        "bad = sorted({'docker', 'yaml', 'tenacity', 'requests'} & set(sys.modules))\n"
        "assert not bad, bad\n"
        "assert m.main(['--help']) == 0\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "python -m pytest -n auto" in proc.stdout


def test_node_tag_covers_the_debs(node_copy: Path, tmp_path: Path) -> None:
    """The .debs the image installs (libfaketime for the skew fault) are part of its identity."""
    node, dockerfile = node_copy / "node", node_copy / "Dockerfile"
    deb = tmp_path / "libfaketime_1_amd64.deb"
    deb.write_bytes(b"one")
    without = image.node_image_tag("sha256:base", node, dockerfile)
    first = image.node_image_tag("sha256:base", node, dockerfile, debs=[deb])
    assert first != without
    deb.write_bytes(b"two")
    assert image.node_image_tag("sha256:base", node, dockerfile, debs=[deb]) != first


def test_node_debs_come_from_the_cache_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    debs = tmp_path / "mole" / "debs"
    debs.mkdir(parents=True)
    (debs / "libfaketime_0.9.9_amd64.deb").write_bytes(b"old")
    (debs / "libfaketime_0.9.10_amd64.deb").write_bytes(b"new")
    os.utime(debs / "libfaketime_0.9.9_amd64.deb", (1, 1))  # fetched before 0.9.10
    monkeypatch.setattr(image.shutil, "which", lambda name: None)  # no apt: offline
    assert [p.name for p in image.node_debs()] == ["libfaketime_0.9.10_amd64.deb"]
    assert image.node_debs(("nothing-here",)) == []

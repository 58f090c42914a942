"""Fixtures that several modules of tests/node use: the event loop of the transport tests
(test_loop, test_tlsproto, test_tlsproto_mem) and the node identity of the TLS ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.identity import Identity, load_or_create
from node.loop import Loop


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def ident(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return load_or_create(tmp_path_factory.mktemp("state"))

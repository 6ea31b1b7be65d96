"""Which delivery remotes are on this machine (their receive-pack is run by the worker)."""

from __future__ import annotations

import pytest

from services.worker.delivery import is_local_url


@pytest.mark.parametrize(
    "url", ["/srv/git/app.git", "../origin.git", "origin.git", "file:///srv/git/app.git"]
)
def test_paths_and_file_urls_are_local(url: str) -> None:
    assert is_local_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "ssh://git@host/app.git",
        "https://example.com/app.git",
        "git@github.com:org/app.git",
        "host:app.git",
        "ext::ssh host",
    ],
)
def test_network_urls_are_not(url: str) -> None:
    assert not is_local_url(url)

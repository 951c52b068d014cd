"""Fixtures of the email channel's tests: a free port and a real SMTP server (aiosmtpd) on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.process import free_port
from tests.support.smtp import Mailbox, smtp_server


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def mailbox(port: int) -> Iterator[Mailbox]:
    with smtp_server(port) as box:
        yield box

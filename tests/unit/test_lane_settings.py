"""The lane's settings: reserved connections per relay, validated at start."""

from __future__ import annotations

import pytest

from mailer.core.settings import ConfigError, load
from mailer.send.lane import split_relays


def test_the_lane_takes_its_connections_out_of_each_relay_leaving_campaigns_at_least_one() -> None:
    settings = load(
        environ={"MAILER_SMTP_CONNECTIONS": "8", "MAILER_TRANSACTIONAL_CONNECTIONS": "2"}
    )
    campaign, lane = split_relays(settings)
    assert [r.connections for r in campaign] == [6]
    assert [r.connections for r in lane] == [2]
    small = load(environ={"MAILER_SMTP_CONNECTIONS": "1"})
    campaign, lane = split_relays(small)
    assert ([r.connections for r in campaign], [r.connections for r in lane]) == ([1], [1])


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("MAILER_TRANSACTIONAL_CONNECTIONS", "0", "transactional.connections"),
        ("MAILER_TRANSACTIONAL_POLL_MS", "5", "transactional.poll_ms"),
        ("MAILER_TRANSACTIONAL_BATCH_SIZE", "0", "transactional.batch_size"),
    ],
)
def test_a_bad_lane_setting_stops_the_start_naming_it(
    variable: str, value: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(environ={variable: value})

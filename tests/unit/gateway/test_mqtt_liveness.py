"""When the telemetry receiver pings the broker and when it gives a connection up (pure timing, no broker)."""
from __future__ import annotations

from gateway.mqtt_receiver import Liveness

KEEPALIVE = 30.0


def test_a_ping_is_due_when_nothing_was_sent_for_a_keepalive():
    live = Liveness(KEEPALIVE, 0.0)
    live.heard(29.0)
    assert not live.ping_due(29.9)
    assert live.ping_due(30.0)


def test_a_ping_is_due_when_nothing_was_heard_for_a_keepalive_even_while_acks_go_out():
    """A broker that handed over its whole queue says nothing while the gateway still acknowledges."""
    live = Liveness(KEEPALIVE, 0.0)
    for second in range(1, 30):
        live.last_sent = float(second)   # an ack written every second
        assert not live.ping_due(float(second))
    live.last_sent = 30.0
    assert live.ping_due(30.0)


def test_an_answered_ping_keeps_the_connection_and_the_next_waits_a_keepalive():
    live = Liveness(KEEPALIVE, 0.0)
    live.pinged(30.0)
    assert not live.ping_due(31.0) and not live.dead(59.0)
    live.heard(30.2)   # PINGRESP
    assert not live.dead(100.0)
    assert not live.ping_due(59.0)
    assert live.ping_due(60.2)


def test_an_unanswered_ping_gives_the_connection_up_after_a_keepalive():
    live = Liveness(KEEPALIVE, 0.0)
    live.pinged(30.0)
    live.last_sent = 50.0   # acks still going out change nothing
    assert not live.dead(60.0)
    assert live.dead(60.1)


def test_a_connection_that_only_receives_still_pings():
    live = Liveness(KEEPALIVE, 0.0)
    for second in range(1, 40):
        live.heard(float(second))
    assert live.ping_due(39.0)

"""A device account subscribing to share groups and wildcards, against a real Mosquitto 2.0.

Mosquitto's ACL file grants every subscription; `pattern read` is checked
only when a message is delivered. Had the gateways a share group, a device
that joined it would be handed its turn of the group's messages, the ACL
would refuse to deliver them, and the broker would not offer them to another
member: they would be gone. The gateway subscribes without a share group
(`[mqtt] shared_group` is refused), so a device's `$share/...` filter forms a
group of its own: whatever it subscribes to, it receives nothing but its own
`cmd`, and the gateway gets every SOS.
"""
from __future__ import annotations

import time

from tests.fixtures.gateway_proc import Publisher, connected_client, register, subscribe, wait_until

SOS_PRESSES = 40
INTRUDER_FILTERS = (
    "$share/gateways/eldercare/watch/+/sos",   # the group name the README used to suggest
    "$share/eldercare/eldercare/watch/+/sos",
    "$share/gateways/eldercare/#",
    "eldercare/#",
    "#",
)


def test_a_device_subscribed_to_share_groups_receives_nothing_and_the_gateway_gets_every_sos(gateway_process, mosquitto):
    gateway = gateway_process()
    register(gateway.store, "watch-0001")
    gateway.start()
    intruded: list[str] = []
    intruder = connected_client(mosquitto, mosquitto.add_device("watch-0002"), "watch-0002",
                                lambda c, u, m: intruded.append(m.topic))
    for topic_filter in INTRUDER_FILTERS:
        subscribe(intruder, topic_filter)  # Mosquitto grants it: its ACL file never refuses a subscription
    watch = Publisher(mosquitto, mosquitto.add_device("watch-0001"), client_id="watch-0001")
    base = int(time.time() * 1000) - 60_000
    for seq in range(1, SOS_PRESSES + 1):
        watch.publish("eldercare/watch/watch-0001/sos", {"ts": base + seq * 100, "seq": seq, "lat": 31.23, "lon": 121.47})
    watch.wait_all()
    watch.close()
    wait_until(lambda: gateway.store.seen_count() >= SOS_PRESSES, 30, "every SOS at the gateway")
    gateway.stop()
    intruder.loop_stop()
    assert gateway.store.seen_count() == SOS_PRESSES
    assert gateway.store.dead_letter_counts() == {}
    assert intruded == []

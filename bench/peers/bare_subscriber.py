"""A paho subscriber that only counts, as its own process, for bench/compare.py.

paho at its cheapest: MQTT 3.1.1 (paho's v5 client costs about twice the CPU per
message), QoS 1, a persistent session (clean session off), paho acknowledging
each message after the callback. A retained message the broker sends because of
the subscription (the gateway's status) is not part of the stream and is not
counted. It reports on stdout, one line at a time:

    ready                      after the SUBACK
    progress <n>               every 0.5 s while messages arrive
    done <n> <t_last>          when <count> arrived or none came for --idle-s;
                               t_last is time.monotonic() at the last message
                               (CLOCK_MONOTONIC, the same clock in every process)

With --unsubscribe-when-done it unsubscribes before leaving, so later runs do
not queue messages for a session nobody reads. SIGTERM leaves the session as it is.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--client-id", default="bench-bare")
    ap.add_argument("--topic", default="eldercare/#")
    ap.add_argument("--count", type=int, required=True, help="stop after this many messages")
    ap.add_argument("--idle-s", type=float, default=10.0, help="stop when nothing arrived for this long")
    ap.add_argument("--max-s", type=float, default=900.0, help="stop after this long in any case")
    ap.add_argument("--unsubscribe-when-done", action="store_true")
    args = ap.parse_args()

    received = 0
    last = time.monotonic()
    subscribed = threading.Event()
    unsubscribed = threading.Event()
    stop = threading.Event()

    def on_message(client, userdata, msg):
        nonlocal received, last
        if msg.retain:
            return
        received += 1
        last = time.monotonic()
        if received >= args.count:
            stop.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv311,
                    clean_session=False)
    c.username_pw_set(args.username, args.password)
    c.on_message = on_message
    c.on_connect = lambda client, *a: client.subscribe(args.topic, qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_unsubscribe = lambda *a: unsubscribed.set()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    c.connect("127.0.0.1", args.port)
    c.loop_start()
    started = time.monotonic()
    if subscribed.wait(10):
        print("ready", flush=True)
    reported = -1
    while not stop.wait(0.5):
        now = time.monotonic()
        if received != reported:
            print(f"progress {received}", flush=True)
            reported = received
        if now - max(last, started) > args.idle_s or now - started > args.max_s:
            break
    if args.unsubscribe_when_done and received >= args.count:
        c.unsubscribe(args.topic)
        unsubscribed.wait(10)
    print(f"done {received} {last:.6f}", flush=True)
    c.disconnect()
    c.loop_stop()
    sys.exit(0)


if __name__ == "__main__":
    main()

"""Simulated smartwatches and outdoor fitness equipment publishing MQTT, for tests, the demo and benchmarks.

The core (`device_sim.stream.generate`) is pure and deterministic: seed,
start time and scenario in, (t_ms, topic, payload, qos) out. `publisher`
paces it onto a broker; `load` publishes at a fixed rate from many devices.
"""

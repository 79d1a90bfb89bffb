"""Eldercare IoT gateway: MQTT ingest, validation, time-series sink and operational store."""

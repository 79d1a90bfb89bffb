"""`[log] format = "json"`: one JSON object per line, exceptions included, for a log collector."""
from __future__ import annotations

import json
import logging

import pytest

from eldercare.logs import configure
from eldercare.settings import ConfigError, load_settings


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_with_the_exception(restore_logging, capsys):
    configure("json")
    log = logging.getLogger("gateway.test")
    log.info("lane %s connected", "critical")
    try:
        raise ValueError("broker went away")
    except ValueError:
        log.exception("reconnecting")
    lines = capsys.readouterr().err.splitlines()
    first, second = (json.loads(line) for line in lines)   # two lines: the traceback is inside the object
    assert first["message"] == "lane critical connected" and first["level"] == "info"
    assert first["logger"] == "gateway.test" and first["ts"].endswith("Z")
    assert second["level"] == "error" and "ValueError: broker went away" in second["exception"]


def test_text_logs_stay_lines_for_a_person(restore_logging, capsys):
    configure("text")
    logging.getLogger("gateway.test").warning("spool has %d files", 3)
    assert "WARNING gateway.test: spool has 3 files" in capsys.readouterr().err


def test_the_log_format_is_a_checked_setting(tmp_path, monkeypatch):
    config = tmp_path / "gateway.toml"
    config.write_text('[log]\nformat = "json"\n', encoding="utf-8")
    assert load_settings(config).log.format == "json"
    config.write_text('[log]\nformat = "xml"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"log\.format"):
        load_settings(config)

"""Settings: defaults, the TOML file, the environment over the file, and errors that name the bad setting."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.toml"


@pytest.fixture(autouse=True)
def no_eldercare_environment(monkeypatch):
    """The developer's own ELDERCARE_* variables must not leak into these tests."""
    for name in [n for n in os.environ if n.startswith("ELDERCARE_")]:
        monkeypatch.delenv(name)


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_the_defaults_are_a_valid_configuration():
    settings = load_settings(None)
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.topic_prefix) == ("127.0.0.1", 1883, "eldercare")


def test_the_example_file_is_a_valid_configuration():
    assert load_settings(EXAMPLE) == Settings()


def test_values_in_the_file_are_loaded(tmp_path):
    path = write(tmp_path, 'instance = "gw7"\n[mqtt]\nhost = "broker.local"\nport = 8883\n[ingest]\nauto_register = true\n')
    settings = load_settings(path)
    assert (settings.instance, settings.mqtt.host, settings.mqtt.port) == ("gw7", "broker.local", 8883)
    assert settings.ingest.auto_register is True


def test_a_setting_left_out_of_the_file_keeps_its_default(tmp_path):
    settings = load_settings(write(tmp_path, '[mqtt]\nhost = "broker.local"\n'))
    assert settings.mqtt.keepalive_s == 30


def test_the_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ELDERCARE_MQTT__PORT", "2883")
    settings = load_settings(write(tmp_path, '[mqtt]\nhost = "broker.local"\nport = 1884\n'))
    assert settings.mqtt.port == 2883


def test_the_environment_overrides_one_key_and_keeps_the_rest_of_the_files_section(tmp_path, monkeypatch):
    monkeypatch.setenv("ELDERCARE_MQTT__PORT", "2883")
    settings = load_settings(write(tmp_path, '[mqtt]\nhost = "broker.local"\nport = 1884\n'))
    assert settings.mqtt.host == "broker.local"


def test_a_secret_comes_from_the_environment_and_is_hidden_when_printed(monkeypatch):
    monkeypatch.setenv("ELDERCARE_MQTT__PASSWORD", "s3cret-broker-pw")
    settings = load_settings(None)
    assert settings.mqtt.password.get_secret_value() == "s3cret-broker-pw"
    assert "s3cret-broker-pw" not in settings.model_dump_json()


def test_port_zero_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt\.port"):
        load_settings(write(tmp_path, "[mqtt]\nport = 0\n"))


def test_an_unknown_key_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt\.hots"):
        load_settings(write(tmp_path, '[mqtt]\nhots = "broker.local"\n'))


def test_a_sink_url_that_is_not_http_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match=r"sink\.url"):
        load_settings(write(tmp_path, '[sink]\nurl = "ftp://store.local"\n'))


def test_every_bad_setting_is_named_in_one_error(tmp_path):
    path = write(tmp_path, '[mqtt]\nport = 0\nhots = "x"\n[sink]\nurl = "ftp://store.local"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "mqtt.port" in message and "mqtt.hots" in message and "sink.url" in message


def test_an_invalid_topic_prefix_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt\.topic_prefix"):
        load_settings(write(tmp_path, '[mqtt]\ntopic_prefix = "eldercare/#"\n'))


def test_a_missing_file_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nowhere.toml")


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(write(tmp_path, "[mqtt\nport = \n"))


def test_a_batch_larger_than_the_brokers_in_flight_window_is_refused(tmp_path):
    path = write(tmp_path, "[mqtt]\nreceive_maximum = 100\n[ingest]\nbatch_size = 101\n")
    with pytest.raises(ConfigError, match=r"ingest\.batch_size must not exceed mqtt\.receive_maximum"):
        load_settings(path)


def test_validate_config_accepts_a_good_file(tmp_path, capsys):
    assert main(["--config", str(write(tmp_path, "[mqtt]\nport = 1884\n")), "--validate-config"]) == 0
    assert "configuration is valid" in capsys.readouterr().err


def test_validate_config_refuses_a_bad_file_and_names_the_setting(tmp_path, capsys):
    assert main(["--config", str(write(tmp_path, "[mqtt]\nport = 0\n")), "--validate-config"]) == 2
    assert "mqtt.port" in capsys.readouterr().err

"""Settings: defaults, the TOML file, the environment over the file, and errors that name the bad setting."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from eldercare.cli import main
from eldercare.settings import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway.toml"


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


def test_a_store_url_that_is_not_postgresql_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match=r"store\.url"):
        load_settings(write(tmp_path, '[store]\nurl = "mysql://db.local/eldercare"\n'))


def test_the_store_is_the_sqlite_file_unless_a_postgresql_url_is_set(tmp_path):
    assert load_settings(write(tmp_path, '[store]\npath = "var/x.db"\n')).store.database == Path("var/x.db")
    url = "postgresql://gateway@db.local/eldercare"
    assert load_settings(write(tmp_path, f'[store]\nurl = "{url}"\n')).store.database == url


def test_every_bad_setting_is_named_in_one_error(tmp_path):
    path = write(tmp_path, '[mqtt]\nport = 0\nhots = "x"\n[sink]\nurl = "ftp://store.local"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "mqtt.port" in message and "mqtt.hots" in message and "sink.url" in message


def test_an_invalid_topic_prefix_is_named_in_the_error(tmp_path):
    with pytest.raises(ConfigError, match=r"mqtt\.topic_prefix"):
        load_settings(write(tmp_path, '[mqtt]\ntopic_prefix = "eldercare/#"\n'))



def test_a_shared_group_is_refused_with_the_reason_in_the_file_and_in_the_environment(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"mqtt\.shared_group: splitting the messages .* round-robin"):
        load_settings(write(tmp_path, '[mqtt]\nshared_group = "gateways"\n'))
    monkeypatch.setenv("ELDERCARE_MQTT__SHARED_GROUP", "9f1c2e7a5b3d4c6e8a0b")
    with pytest.raises(ConfigError, match=r"ELDERCARE_MQTT__SHARED_GROUP: splitting the messages"):
        load_settings(None)


@pytest.fixture
def tls_files(tmp_path):
    """A CA, and a client certificate and key it signed, as PEM files."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("gateway", common_name="gateway")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "gw.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
    return tmp_path / "ca.crt", tmp_path / "gw.crt", tmp_path / "gw.key"


def test_mqtt_over_tls_takes_a_ca_a_client_certificate_and_its_key(tmp_path, tls_files):
    ca, cert, key = tls_files
    settings = load_settings(write(tmp_path, f'[mqtt]\nport = 8883\ntls_ca_file = "{ca}"\n'
                                             f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'))
    assert (settings.mqtt.tls.ca_file, settings.mqtt.tls.cert_file, settings.mqtt.tls.key_file) == (ca, cert, key)
    assert settings.mqtt.tls.context().verify_mode.name == "CERT_REQUIRED"


def test_without_a_ca_the_gateway_speaks_plain_mqtt():
    assert Settings().mqtt.tls is None


@pytest.mark.parametrize(("keys", "named"), [
    ("tls_ca_file = '{ca}'\ntls_cert_file = '{cert}'\n", "mqtt.tls_key_file: a client certificate needs its key"),
    ("tls_cert_file = '{cert}'\ntls_key_file = '{key}'\n", "mqtt.tls_ca_file: a client certificate is only sent over TLS"),
    ("tls_ca_file = '{key}'\n", "mqtt.tls_ca_file: "),
    ("tls_ca_file = '{ca}'\ntls_cert_file = '{ca}'\ntls_key_file = '{key}'\n", "mqtt.tls_cert_file: "),
    ("tls_ca_file = '{ca}.missing'\n", "mqtt.tls_ca_file: "),
])
def test_incomplete_or_unusable_tls_settings_are_named(tmp_path, tls_files, keys, named):
    ca, cert, key = tls_files
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, "[mqtt]\n" + keys.format(ca=ca, cert=cert, key=key)))
    assert named in str(error.value)


def test_a_key_behind_a_passphrase_is_refused_at_start_naming_the_setting(tmp_path, tls_files):
    from cryptography.hazmat.primitives import serialization

    ca, cert, key = tls_files
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(ConfigError, match=r"mqtt\.tls_cert_file: "):
        load_settings(write(tmp_path, f"[mqtt]\ntls_ca_file = '{ca}'\ntls_cert_file = '{cert}'\ntls_key_file = '{key}'\n"))

def test_a_missing_file_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nowhere.toml")


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(write(tmp_path, "[mqtt\nport = \n"))


def test_a_batch_larger_than_the_brokers_in_flight_window_is_refused(tmp_path):
    path = write(tmp_path, "[mqtt]\nreceive_maximum = 100\n[ingest]\nbatch_size = 101\n")
    with pytest.raises(ConfigError, match=r"ingest\.batch_size: must not exceed mqtt\.receive_maximum"):
        load_settings(path)


def test_validate_config_accepts_a_good_file(tmp_path, capsys):
    assert main(["--config", str(write(tmp_path, "[mqtt]\nport = 1884\n")), "--validate-config"]) == 0
    assert "configuration is valid" in capsys.readouterr().err


def test_validate_config_refuses_a_bad_file_and_names_the_setting(tmp_path, capsys):
    assert main(["--config", str(write(tmp_path, "[mqtt]\nport = 0\n")), "--validate-config"]) == 2
    assert "mqtt.port" in capsys.readouterr().err


# -- settings that would silently disable safety --------------------------------------------------

SID = "AC" + "0123456789abcdef" * 2
TWILIO = f'[alerts.twilio]\naccount_sid = "{SID}"\nfrom_number = "+15555550199"\n'   # the token comes from the environment


def refused_in_one_line(capsys, path) -> str:
    """Run --validate-config on the file; it must exit 2 with a single clean line, which is returned."""
    assert main(["--config", str(path), "--validate-config"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("zone", ["Mars/Base", "../etc", "", "Asia", "/etc/passwd"])
def test_an_unknown_time_zone_is_refused_in_one_line_naming_alerts_timezone(tmp_path, capsys, zone):
    line = refused_in_one_line(capsys, write(tmp_path, f'[alerts]\ntimezone = "{zone}"\n'))
    assert line == f"eldercare-gateway: invalid configuration: alerts.timezone: unknown time zone {zone!r}"


def test_partial_twilio_settings_are_refused_naming_the_missing_one(tmp_path, capsys):
    line = refused_in_one_line(capsys, write(tmp_path, TWILIO))
    assert line.startswith("eldercare-gateway: invalid configuration: alerts.twilio: auth_token missing")
    assert "alerts.dry_run = true" in line


def test_a_twilio_token_alone_is_refused_naming_the_other_two(tmp_path, monkeypatch):
    monkeypatch.setenv("ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN", "a-real-looking-auth-token")
    with pytest.raises(ConfigError, match=r"alerts\.twilio: account_sid and from_number missing"):
        load_settings(None)


def test_partial_twilio_settings_are_accepted_when_dry_run_is_asked_for(tmp_path):
    settings = load_settings(write(tmp_path, "[alerts]\ndry_run = true\n" + TWILIO))
    assert settings.alerts.dry_run and not settings.alerts.sends_for_real


def test_no_twilio_settings_at_all_is_a_dry_run():
    assert not load_settings(None).alerts.sends_for_real


def test_dry_run_wins_over_a_complete_twilio_account(tmp_path, monkeypatch):
    monkeypatch.setenv("ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN", "a-real-looking-auth-token")
    path = write(tmp_path, '[alerts]\ndry_run = true\npublic_base_url = "https://gw.example.org"\n' + TWILIO)
    assert not load_settings(path).alerts.sends_for_real


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.3.2.1", "http://[::1]:8000", "http://localhost:8000",
                                 "https://LOCALHOST./", "http://0.0.0.0:8000"])
def test_a_loopback_public_url_with_real_twilio_is_refused(tmp_path, monkeypatch, capsys, url):
    monkeypatch.setenv("ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN", "a-real-looking-auth-token")
    line = refused_in_one_line(capsys, write(tmp_path, f'[alerts]\npublic_base_url = "{url}"\n' + TWILIO))
    assert line.startswith("eldercare-gateway: invalid configuration: alerts.public_base_url: ")
    assert "press-1" in line


def test_a_reachable_public_url_with_real_twilio_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN", "a-real-looking-auth-token")
    settings = load_settings(write(tmp_path, '[alerts]\npublic_base_url = "https://gw.example.org"\n' + TWILIO))
    assert settings.alerts.sends_for_real


def test_a_loopback_public_url_with_a_local_twilio_stand_in_is_accepted(tmp_path, monkeypatch):
    """Tests run Twilio's stand-in on this machine; it can reach webhooks on this machine."""
    monkeypatch.setenv("ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN", "a-real-looking-auth-token")
    path = write(tmp_path, TWILIO + 'api_base_url = "http://127.0.0.1:4010"\n')
    settings = load_settings(path)
    assert settings.alerts.sends_for_real and settings.alerts.public_base_url == "http://127.0.0.1:8000"


def test_the_retired_shared_api_token_is_refused_saying_what_replaced_it_without_showing_it(monkeypatch, capsys):
    token = "x" * 40
    monkeypatch.setenv("ELDERCARE_WEB__API_TOKEN", token)
    assert main(["--validate-config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eldercare-gateway: invalid configuration: ELDERCARE_WEB__API_TOKEN: the shared operator token is gone")
    assert "create-token" in err and token not in err


def test_the_retired_shared_api_token_in_the_file_is_refused_saying_what_replaced_it(tmp_path):
    with pytest.raises(ConfigError, match=r"web\.api_token: the shared operator token is gone"):
        load_settings(write(tmp_path, '[web]\napi_token = "0123456789abcdef0123456789abcdef"\n'))


@pytest.mark.parametrize("low, high", [(-10, 5), (50, 300), (0, 120)])
def test_a_heart_rate_range_no_heart_can_have_is_refused(tmp_path, capsys, low, high):
    path = write(tmp_path, f"[alerts]\ndefault_heart_rate_range = [{low}, {high}]\n")
    assert main(["--config", str(path), "--validate-config"]) == 2
    err = capsys.readouterr().err
    assert "alerts.default_heart_rate_range" in err and "Traceback" not in err


def test_an_inverted_heart_rate_range_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"alerts\.default_heart_rate_range: must be \[low, high\] with low < high"):
        load_settings(write(tmp_path, "[alerts]\ndefault_heart_rate_range = [120, 50]\n"))


def test_a_night_that_ends_when_it_starts_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"alerts\.night_end: must differ from night_start"):
        load_settings(write(tmp_path, '[alerts]\nnight_start = "22:00:00"\nnight_end = "22:00:00"\n'))


def test_a_first_retry_delay_longer_than_the_longest_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"alerts\.retry\.base_delay_s: must not exceed max_delay_s"):
        load_settings(write(tmp_path, "[alerts.retry]\nbase_delay_s = 60\nmax_delay_s = 30\n"))


@pytest.mark.parametrize("text, setting", [
    ("[mqtt]\nsession_expiry_s = 4294967296\n", "mqtt.session_expiry_s"),
    ('[mqtt]\nhost = ""\n', "mqtt.host"),
    ('[web]\nhost = ""\n', "web.host"),
    ("[alerts.twilio]\ntimeout_s = 0\n", "alerts.twilio.timeout_s"),
    ("[alerts.twilio]\ntimeout_s = 600\n", "alerts.twilio.timeout_s"),
])
def test_numbers_and_names_that_cannot_work_are_refused_naming_the_setting(tmp_path, text, setting):
    with pytest.raises(ConfigError, match=rf"invalid configuration: {setting.replace('.', '[.]')}: "):
        load_settings(write(tmp_path, text))


def test_a_misspelt_section_in_an_environment_variable_is_refused_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("ELDERCARE_ALERT__TWILIO__AUTH_TOKEN", "a-real-looking-auth-token")
    assert main(["--validate-config"]) == 2
    assert capsys.readouterr().err == ("eldercare-gateway: invalid configuration: ELDERCARE_ALERT__TWILIO__AUTH_TOKEN: "
                                       "names no setting (did you mean ELDERCARE_ALERTS__TWILIO__AUTH_TOKEN?)\n")


def test_an_environment_variable_naming_no_setting_inside_a_section_is_refused(monkeypatch):
    monkeypatch.setenv("ELDERCARE_MQTT__HOTS", "broker.local")
    with pytest.raises(ConfigError, match=r"ELDERCARE_MQTT__HOTS: names no setting \(did you mean ELDERCARE_MQTT__HOST\?\)"):
        load_settings(None)


def test_every_unknown_environment_variable_and_bad_setting_is_reported_together(tmp_path, monkeypatch):
    monkeypatch.setenv("ELDERCARE_MQQT__PORT", "1884")
    monkeypatch.setenv("ELDERCARE_WEB__PROT", "8001")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "[mqtt]\nport = 0\n"))
    lines = str(caught.value).splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["ELDERCARE_MQQT__PORT", "ELDERCARE_WEB__PROT", "mqtt.port"]


def test_environment_variable_names_are_matched_without_regard_to_case(monkeypatch):
    monkeypatch.setenv("eldercare_mqtt__Port", "2883")
    assert load_settings(None).mqtt.port == 2883


def test_a_whole_section_or_list_may_be_given_in_one_variable(monkeypatch):
    monkeypatch.setenv("ELDERCARE_ALERTS__DEFAULT_HEART_RATE_RANGE", "[45, 110]")
    monkeypatch.setenv("ELDERCARE_WEB", '{"port": 8001}')
    settings = load_settings(None)
    assert settings.alerts.default_heart_rate_range == (45, 110) and settings.web.port == 8001


def test_the_device_simulators_own_variable_is_not_taken_for_a_setting(monkeypatch):
    monkeypatch.setenv("ELDERCARE_SIM_PASSWORD", "simulator-password")
    assert load_settings(None) == Settings()


def test_a_list_in_an_environment_variable_that_is_not_json_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("ELDERCARE_ALERTS__DEFAULT_HEART_RATE_RANGE", "50,120")
    assert main(["--validate-config"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and '"alerts"' in err and "must be JSON" in err


def test_a_silence_floor_above_its_ceiling_is_refused_naming_the_floor(tmp_path):
    path = write(tmp_path, "[alerts]\nwatch_silent_min_s = 4000\nwatch_silent_max_s = 3600\n")
    with pytest.raises(ConfigError, match=r"alerts\.watch_silent_min_s: must not exceed watch_silent_max_s"):
        load_settings(path)


def test_an_outcome_window_shorter_than_the_reconcile_pause_is_refused(tmp_path):
    path = write(tmp_path, "[alerts]\nreconcile_after_s = 60\nunknown_outcome_window_s = 30\n")
    with pytest.raises(ConfigError, match=r"alerts\.unknown_outcome_window_s: must exceed reconcile_after_s"):
        load_settings(path)

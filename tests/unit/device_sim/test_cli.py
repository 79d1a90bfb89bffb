"""The simulator's command line: help, list, dump, and clear refusals; device credentials files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device_sim.cli import DUMP_START_MS, _parser, main
from device_sim.publisher import CredentialsError, load_device_passwords
from device_sim.scenario import load_scenario
from device_sim.stream import generate

REPO = Path(__file__).resolve().parents[3]


def test_help_runs_as_a_module_and_names_every_subcommand_and_the_credentials_options():
    out = subprocess.run([sys.executable, "-m", "device_sim", "--help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    for word in ("run", "load", "list", "dump", "devices", "--credentials-file", "--password-for-all"):
        assert word in out


def test_run_help_shows_the_broker_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--speed" in out and "--scenario" in out and "127.0.0.1" in out and "1883" in out


def test_dump_prints_the_deterministic_stream_as_json_lines(capsys):
    assert main(["dump", "--scenario", "sos_and_fall", "--seed", "4"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = list(generate(load_scenario("sos_and_fall"), 4, DUMP_START_MS))
    assert [(d["t_ms"], d["topic"], d["payload"].encode(), d["qos"]) for d in lines] == [tuple(e) for e in expected]


def test_dump_of_the_same_seed_twice_is_identical(capsys):
    main(["dump", "--scenario", "bad_delivery", "--seed", "9"])
    first = capsys.readouterr().out
    main(["dump", "--scenario", "bad_delivery", "--seed", "9"])
    assert capsys.readouterr().out == first


def test_list_shows_the_shipped_scenarios_with_their_descriptions(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bad_delivery") and "demo " in out and "SOS pressed twice" in out


def test_an_unknown_scenario_is_refused_with_exit_code_2_and_the_reason(capsys):
    assert main(["dump", "--scenario", "no-such-scenario"]) == 2
    assert "no scenario 'no-such-scenario'" in capsys.readouterr().err


def test_credentials_files_map_device_ids_to_passwords_in_toml_or_json(tmp_path):
    toml = tmp_path / "devices.toml"
    toml.write_text('watch-0001 = "pw1"\n"rower-01" = "pw2"\n')
    js = tmp_path / "devices.json"
    js.write_text('{"watch-0001": "pw1", "rower-01": "pw2"}')
    assert load_device_passwords(toml) == load_device_passwords(js) == {"watch-0001": "pw1", "rower-01": "pw2"}


def test_a_credentials_file_with_a_nested_table_is_refused(tmp_path):
    bad = tmp_path / "devices.toml"
    bad.write_text('[devices]\nwatch-0001 = "pw1"\n')
    with pytest.raises(CredentialsError, match="flat table"):
        load_device_passwords(bad)


def test_devices_lists_each_id_with_its_kind_for_registration(capsys):
    assert main(["devices", "--scenario", "demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "watch-0001 watch"
    assert "rower-01 equipment" in lines
    assert len(lines) == len(load_scenario("demo").devices)


def test_an_accelerated_run_ends_at_the_wall_clock_so_no_device_time_is_in_the_future():
    from device_sim.cli import run_start_ms

    hour = 3600
    assert run_start_ms(10_000, hour, speed=1) == 10_000_000           # real time: starts now
    assert run_start_ms(10_000, hour, speed=60) == (10_000 - 59 * 60) * 1000
    assert run_start_ms(10_000, hour, speed=0) == (10_000 - hour) * 1000   # as fast as possible: all in the past
    assert run_start_ms(10_000, hour, speed=0.5) == 10_000_000         # slower than real time never runs ahead


def test_a_part_of_a_run_is_given_in_scenario_time_and_a_bad_one_is_refused(capsys):
    run = _parser().parse_args(["run", "--from", "720", "--until", "40m"])
    assert (run.from_s, run.until_s) == (720, 2400)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--from", "soon"])
    assert exit_.value.code == 2
    assert "--from: scenario time: 'soon' is not a duration" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "load"])
def test_tls_flags_are_offered_by_run_and_load(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--cafile" in out and "--cert" in out and "--key" in out


@pytest.mark.parametrize(("args", "said"), [
    (["--cert", "device.crt", "--key", "device.key"], "give --cafile too"),
    (["--cafile", "ca.crt", "--cert", "device.crt"], "needs its key"),
    (["--cafile", "no-such-ca.crt"], "no-such-ca.crt is not a usable CA certificate"),
])
def test_incomplete_or_unusable_tls_flags_are_refused_before_connecting(args, said, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--scenario", "sos_and_fall", "--port", "1", *args]) == 2
    assert said in capsys.readouterr().err

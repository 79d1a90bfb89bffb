"""Scenario files: the shipped ones parse, and a bad one says what is wrong and where."""
from __future__ import annotations

import pytest

from device_sim.scenario import ScenarioError, load_scenario, parse_duration, parse_scenario, scenario_names
from gateway.models import EquipmentType

MINIMAL = """
duration = "10m"
[fleet]
watches = 2
equipment = ["rower", "rower", "waist_twister"]
"""


def test_the_shipped_scenarios_include_demo_and_all_parse():
    names = scenario_names()
    assert "demo" in names
    for name in names:
        assert load_scenario(name).duration_s > 0


def test_a_scenario_file_can_be_loaded_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL)
    scenario = load_scenario(str(path))
    assert scenario.name == "mine"
    assert scenario.watches == ("watch-0001", "watch-0002")
    assert scenario.equipment == (("rower-01", EquipmentType.ROWER), ("rower-02", EquipmentType.ROWER),
                                  ("waist-twister-01", EquipmentType.WAIST_TWISTER))


def test_defaults_are_a_shanghai_neighbourhood_and_the_documented_cadence():
    scenario = parse_scenario(MINIMAL)
    assert (scenario.community.centre.lat, scenario.community.centre.lon) == (31.2304, 121.4737)
    assert scenario.community.radius_m == 800
    c = scenario.cadence
    assert (c.location_moving, c.location_rest, c.status, c.health) == (60, 300, 300, 600)


def test_events_are_read_with_their_options():
    scenario = parse_scenario(MINIMAL + """
[[events]]
at = "1m30s"
device = "watch-0002"
action = "remove_watch"
duration = "2m"
""")
    (event,) = scenario.events
    assert (event.at_s, event.device, event.action, event.duration_s) == (90, "watch-0002", "remove_watch", 120)


def test_the_new_device_mishaps_are_read_with_their_options():
    scenario = parse_scenario(MINIMAL + """
[[events]]
at = "2m"
device = "watch-0001"
action = "clock_jump"
ahead = "8h"
duration = "3m"
[[events]]
at = "4m"
device = "rower-01"
action = "reboot"
[[events]]
at = "5m"
device = "watch-0002"
action = "lbs_drift"
duration = "1m"
""")
    jump, reboot, drift = scenario.events
    assert (jump.action, jump.ahead_ms, jump.t_ms, jump.end_ms) == ("clock_jump", 8 * 3_600_000, 120_000, 300_000)
    assert (reboot.device, reboot.action) == ("rower-01", "reboot")
    assert (drift.action, drift.end_ms) == ("lbs_drift", 360_000)


def test_operations_are_for_the_demo_and_come_in_time_order_with_their_options():
    scenario = parse_scenario(MINIMAL + """
[[operations]]
at = "6m"
action = "restart_gateway"
down = "2m"
[[operations]]
at = "1m"
action = "acknowledge"
device = "watch-0002"
""")
    assert [(o.at_s, o.action, o.device, o.down_s) for o in scenario.operations] == [
        (60, "acknowledge", "watch-0002", 0), (360, "restart_gateway", None, 120)]
    assert scenario.events == ()


def test_gateway_settings_for_the_demo_are_kept_as_written_for_the_gateway_to_check():
    scenario = parse_scenario(MINIMAL + "[gateway.alerts]\nwatch_silent_s = 20\nrestart_grace_s = 5\n")
    assert scenario.gateway == {"alerts": {"watch_silent_s": 20, "restart_grace_s": 5}}
    assert parse_scenario(MINIMAL).gateway == {}


def test_the_safety_scenario_acknowledges_and_restarts_while_its_watches_misbehave():
    safety = load_scenario("safety")
    assert [o.action for o in safety.operations] == ["acknowledge", "restart_gateway"]
    assert {"reboot", "clock_jump", "lbs_drift", "silent", "sos"} <= {e.action for e in safety.events}


@pytest.mark.parametrize("value, seconds", [(90, 90), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("0.5s", 0.5)])
def test_durations_are_numbers_or_h_m_s_strings(value, seconds):
    assert parse_duration(value, "x") == seconds


def _event(**fields) -> str:
    return MINIMAL + "[[events]]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in fields.items())


@pytest.mark.parametrize("text, says", [
    ("duration = ", "not valid TOML"),
    ("[fleet]\nwatches = 1\n", "missing duration"),
    ('duration = "soon"\n', "not a duration"),
    ('duration = "1h"\ncolour = "red"\n', "unknown key(s) ['colour']"),
    ('duration = "1h"\n[fleet]\nequipment = ["trampoline"]\n', "unknown type 'trampoline'"),
    ('duration = "1h"\nstart_time = "25:00"\n', "start_time"),
    (_event(at="1m", device="watch-0009", action="sos"), "no device 'watch-0009'"),
    (_event(at="1m", device="watch-0001", action="dance"), "unknown action 'dance'"),
    (_event(at="1m", device="rower-01", action="sos"), "'sos' is not something 'rower-01' (equipment) can do"),
    (_event(at="1m", device="watch-0001", action="overexert"), "(watch) can do"),
    (_event(at="1m", device="watch-0001", action="silent"), "'silent' needs ['duration']"),
    (_event(at="1m", device="watch-0001", action="clock_jump", duration="5m"), "'clock_jump' needs ['ahead']"),
    (_event(at="1m", device="watch-0001", action="reboot", duration="5m"), "'reboot' takes no ['duration']"),
    (_event(at="1m", device="rower-01", action="lbs_drift", duration="5m"), "(equipment) can do"),
    (_event(at="1m", device="watch-0001", action="sos", level=3), "'sos' takes no ['level']"),
    (_event(at="1h", device="watch-0001", action="sos"), "not before the scenario's end"),
    (_event(at="1m", device="watch-0001", action="malformed", kind="spicy"), "malformed kind 'spicy'"),
    (_event(at="1m", device="rower-01", action="malformed", kind="lat_out_of_range"), "malformed kind"),
    (_event(device="watch-0001", action="sos"), "missing ['at']"),
    (MINIMAL + '[[operations]]\nat = "1m"\naction = "acknowledge"\n', "'acknowledge' needs ['device']"),
    (MINIMAL + '[[operations]]\nat = "1m"\naction = "acknowledge"\ndevice = "watch-0009"\n', "no device 'watch-0009'"),
    (MINIMAL + '[[operations]]\nat = "1m"\naction = "reboot_gateway"\n', "unknown action 'reboot_gateway'"),
    (MINIMAL + '[[operations]]\nat = "5m"\naction = "restart_gateway"\ndown = "5m"\n', "back before the scenario's end"),
    (MINIMAL + '[[operations]]\nat = "1m"\naction = "restart_gateway"\ndown = "5m"\n'
               '[[operations]]\nat = "3m"\naction = "acknowledge"\ndevice = "watch-0001"\n', "while the gateway is down"),
    ('gateway = "fast"\n' + MINIMAL, "[gateway] must be a table"),
])
def test_a_bad_scenario_is_refused_with_its_file_name_and_the_reason(text, says):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "broken.toml")
    assert str(err.value).startswith("broken.toml: ")
    assert says in str(err.value)


def test_an_unknown_scenario_name_lists_the_shipped_ones():
    with pytest.raises(ScenarioError, match=r"no scenario 'nope'.*demo"):
        load_scenario("nope")


def test_a_missing_scenario_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(str(tmp_path / "absent.toml"))

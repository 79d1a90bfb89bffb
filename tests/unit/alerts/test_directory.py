"""The community directory: validation with errors that name the bad field, and lookups."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from alerts.directory import DirectoryError, EscalationStep, load_directory, parse_community
from tests.unit.alert_support import COMMUNITY, DAUGHTER, DUTY

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "community.toml"


def test_example_community_file_loads():
    d = load_directory(EXAMPLE)
    assert d.wearer("watch-0001").name and d.community.default_plan[0].target == "service_centre"


def test_unknown_field_is_refused_by_name():
    bad = copy.deepcopy(COMMUNITY)
    bad["residents"][0]["nickname"] = "Granny"
    with pytest.raises(DirectoryError, match=r"residents\.0\.nickname"):
        parse_community(bad)


def test_bad_phone_number_names_the_field():
    bad = copy.deepcopy(COMMUNITY)
    bad["duty"]["backup_centre"] = "12345"
    with pytest.raises(DirectoryError, match=r"duty\.backup_centre"):
        parse_community(bad)


def test_duplicate_watch_is_refused():
    bad = copy.deepcopy(COMMUNITY)
    bad["residents"].append({**bad["residents"][0], "id": "r-2"})
    with pytest.raises(DirectoryError, match="duplicate watch_device_id"):
        parse_community(bad)


def test_missing_file_is_a_directory_error(tmp_path):
    with pytest.raises(DirectoryError, match=r"nope\.toml"):
        load_directory(tmp_path / "nope.toml")


def test_language_defaults_to_mandarin_and_family_targets_resolve():
    d = parse_community(COMMUNITY)
    wang = d.wearer("w1")
    assert wang.language == "zh-CN"
    first = d.recipients(EscalationStep(channel="voice", target="family_first"), wang)
    assert first == ((DAUGHTER, "zh-CN"),)
    assert d.recipients(EscalationStep(channel="sms", target="family_all"), None) == ()
    assert d.recipients(EscalationStep(channel="sms", target="maintenance"), None) == ((DUTY["maintenance"], "zh-CN"),)


def test_resident_plan_overrides_the_default_for_red_but_not_yellow():
    data = copy.deepcopy(COMMUNITY)
    data["residents"][0]["escalation_plan"] = [{"channel": "sms", "target": "family_all"}]
    d = parse_community(data)
    wang = d.wearer("w1")
    assert d.plan_for(wang, "red", maintenance=False)[0].target == "family_all"
    assert d.plan_for(wang, "yellow", maintenance=False)[0].target == "service_desk"
    assert d.plan_for(None, "orange", maintenance=True)[0].target == "maintenance"

"""The broker ACL a production broker gets, and which device ids may become broker accounts."""
from __future__ import annotations

import pytest

from devtools.localservices import dev_acl_text
from gateway.broker_accounts import acl_text, device_account_problem


def test_the_production_acl_has_no_simulator_account():
    assert "simulator" not in acl_text()
    assert acl_text("acme/eldercare").splitlines() == [
        "user gateway", "topic readwrite acme/eldercare/#", "",
        "# Every device account: its username is its device id.",
        "pattern write acme/eldercare/+/%u/+", "pattern read acme/eldercare/+/%u/cmd",
    ]


def test_the_dev_and_test_acl_is_the_production_acl_plus_the_simulator():
    dev = dev_acl_text()
    assert dev.startswith(acl_text())
    assert "user simulator\ntopic write eldercare/+/+/+\n" in dev


@pytest.mark.parametrize("device_id", ["watch-0001", "rower.3", "w:17_a"])
def test_an_ordinary_device_id_can_be_a_broker_account(device_id):
    assert device_account_problem(device_id) is None


@pytest.mark.parametrize(("device_id", "why"), [
    ("gateway", "reserved"), ("simulator", "reserved"), ("SIMULATOR", "reserved"),
    ("a/b", "'/', '+' or '#'"), ("w+", "'/', '+' or '#'"), ("#", "'/', '+' or '#'"),
    ("", "1 to 64"), ("x" * 65, "1 to 64"), ("w 1", "1 to 64"), ("w1\n", "1 to 64"), ("w%u", "1 to 64"),
])
def test_a_reserved_or_unsafe_device_id_is_refused_with_the_reason(device_id, why):
    assert why in (device_account_problem(device_id) or "")


def test_names_reserved_by_the_caller_are_refused_too():
    assert "reserved" in (device_account_problem("gw-east", reserved=["gw-east"]) or "")

"""Accounts, sessions and API tokens: hashing, throttling, expiry, revocation."""
from __future__ import annotations

import pytest

from dashboards.accounts import (
    THROTTLE_AFTER,
    THROTTLE_S,
    AccountError,
    AccountStore,
    LoginThrottled,
    Role,
    throttled_until,
)
from gateway.db import connect
from tests.fixtures.postgres import database

T0 = 1_790_000_000_000
PW = "a long enough password"


@pytest.fixture
def store(tmp_path, store_backend):
    s = AccountStore(database(tmp_path, "web.db"), session_hours=1)
    s.create_account("chen", PW, Role.OPERATOR, T0)
    yield s
    s.close()


def test_passwords_are_stored_as_argon2_hashes_never_in_clear(store, tmp_path):
    [(hashed,)] = connect(database(tmp_path, "web.db")).execute("SELECT password_hash FROM accounts").fetchall()
    assert hashed.startswith("$argon2id$") and PW not in hashed
    assert store.verify_login("chen", PW, T0).username == "chen"
    assert store.verify_login("chen", PW + "x", T0) is None


@pytest.mark.parametrize("name, password, why", [("a", PW, "username"), ("has space", PW, "username"),
                                                 ("lin", "short", "at least 10")])
def test_bad_usernames_and_short_passwords_are_refused(store, name, password, why):
    with pytest.raises(AccountError, match=why):
        store.create_account(name, password, Role.OPERATOR, T0)


def test_a_second_account_of_the_same_name_is_refused(store):
    with pytest.raises(AccountError, match="already exists"):
        store.create_account("chen", PW, Role.ADMIN, T0)


def test_the_tenth_failure_throttles_and_the_right_password_does_not_get_through(store):
    for i in range(THROTTLE_AFTER):
        assert store.verify_login("chen", "wrong", T0 + i) is None
    with pytest.raises(LoginThrottled) as e:
        store.verify_login("chen", PW, T0 + 20)
    assert 0 < e.value.retry_after_s <= THROTTLE_S
    after = T0 + THROTTLE_AFTER + THROTTLE_S * 1000
    assert store.verify_login("chen", PW, after).username == "chen"   # success resets the count
    assert store.verify_login("chen", "wrong", after + 1) is None     # one failure alone does not throttle again


def test_nine_failures_do_not_throttle():
    assert throttled_until(THROTTLE_AFTER - 1, T0) == 0
    assert throttled_until(THROTTLE_AFTER, T0) == T0 + THROTTLE_S * 1000


def test_a_session_lasts_its_hours_and_ends_at_logout(store):
    token = store.start_session("chen", T0)
    actor = store.session_actor(token, T0 + 1)
    assert actor.name == "chen" and actor.role == Role.OPERATOR and len(actor.csrf) > 20
    assert store.session_actor(token, T0 + 3_600_001) is None
    token = store.start_session("chen", T0)
    store.end_session(token)
    assert store.session_actor(token, T0 + 1) is None


def test_disabling_an_account_or_changing_its_password_ends_its_sessions(store):
    token = store.start_session("chen", T0)
    store.set_disabled("chen", True)
    assert store.session_actor(token, T0) is None and store.verify_login("chen", PW, T0) is None
    store.set_disabled("chen", False)
    token = store.start_session("chen", T0)
    store.set_password("chen", "another long password")
    assert store.session_actor(token, T0) is None
    assert store.verify_login("chen", "another long password", T0) is not None


def test_api_tokens_are_stored_hashed_named_and_revocable(store, tmp_path):
    token = store.create_token("district-hub", Role.OPERATOR, "admin", T0)
    rows = connect(database(tmp_path, "web.db")).execute("SELECT token_hash FROM api_tokens").fetchall()
    assert token not in str(rows)
    assert store.token_actor(token).name == "token:district-hub"
    assert store.token_actor(token + "x") is None
    store.revoke_token("district-hub", T0 + 1)
    assert store.token_actor(token) is None
    with pytest.raises(AccountError):
        store.revoke_token("district-hub", T0 + 2)
    assert store.tokens()[0].revoked_ms == T0 + 1

"""`register-device`: the device's broker password never travels on the command line."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
from pathlib import Path

import pytest

from eldercare.cli import main
from gateway.store import OperationalStore

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None,
                                reason="mosquitto_passwd not found: apt-get install mosquitto")


@pytest.fixture(autouse=True)
def no_eldercare_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("ELDERCARE_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def register(tmp_path):
    """Runs `register-device w1 --kind watch` with extra arguments against a store in tmp_path."""
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "gateway.db"}"\n')

    def run(*args: str) -> int:
        return main(["--config", str(config), "register-device", "w1", "--kind", "watch", *args])
    return run


def registered(tmp_path) -> bool:
    return (tmp_path / "gateway.db").exists() and OperationalStore(tmp_path / "gateway.db").device("w1") is not None


def accepts(passwd_file, username: str, password: str) -> bool:
    """Checks a password against Mosquitto's PBKDF2-SHA512 entry (`user:$7$iterations$salt$hash`)."""
    for line in passwd_file.read_text().splitlines():
        user, _, entry = line.partition(":")
        if user == username:
            _, kind, iterations, salt, digest = entry.split("$")
            assert kind == "7"
            return hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                                       int(iterations)) == base64.b64decode(digest)
    return False


@pytest.mark.parametrize("args", [["--password", "s3cret-pw"], ["--password=s3cret-pw"]])
def test_a_password_on_the_command_line_is_refused_and_nothing_is_registered(register, tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        register("--password-file", str(tmp_path / "passwd"), *args)
    assert exit_.value.code == 2
    assert "--password-stdin or --device-password-file" in capsys.readouterr().err
    assert not registered(tmp_path) and not (tmp_path / "passwd").exists()


def test_the_device_password_is_read_from_standard_input(register, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pw: with spaces\nnext line ignored\n"))
    assert register("--password-file", str(tmp_path / "passwd"), "--password-stdin") == 0
    assert accepts(tmp_path / "passwd", "w1", "s3cret pw: with spaces")
    assert "s3cret" not in capsys.readouterr().out and registered(tmp_path)


def test_the_device_password_is_read_from_a_file(register, tmp_path, capsys):
    (tmp_path / "w1.pw").write_text("from-a-file\n")
    assert register("--password-file", str(tmp_path / "passwd"), "--device-password-file", str(tmp_path / "w1.pw")) == 0
    assert accepts(tmp_path / "passwd", "w1", "from-a-file")
    assert "from-a-file" not in capsys.readouterr().out


def test_without_a_given_password_a_random_one_is_made_and_printed(register, tmp_path, capsys):
    assert register("--password-file", str(tmp_path / "passwd")) == 0
    [printed] = [line.removeprefix("password: ") for line in capsys.readouterr().out.splitlines()
                 if line.startswith("password: ")]
    assert len(printed) >= 20 and accepts(tmp_path / "passwd", "w1", printed)


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_an_empty_password_on_standard_input_is_refused(register, tmp_path, monkeypatch, capsys, stdin):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert register("--password-file", str(tmp_path / "passwd"), "--password-stdin") == 2
    assert "no password on the first line of standard input" in capsys.readouterr().err
    assert not registered(tmp_path)


def test_an_unreadable_device_password_file_is_named(register, tmp_path, capsys):
    assert register("--password-file", str(tmp_path / "passwd"), "--device-password-file", str(tmp_path / "nope")) == 2
    assert f"cannot read {tmp_path / 'nope'}" in capsys.readouterr().err


def test_a_given_password_without_a_mosquitto_file_is_refused(register, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert register("--password-stdin") == 2
    assert "needs --password-file" in capsys.readouterr().err and not registered(tmp_path)


def test_standard_input_and_a_password_file_together_are_refused(register, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        register("--password-file", str(tmp_path / "passwd"), "--password-stdin", "--device-password-file", "x")
    assert exit_.value.code == 2



@pytest.mark.parametrize("device_id", ["gateway", "simulator", "Gateway", "w/1", "w+", "w#", "+", "#", "w 1", ""])
def test_a_reserved_or_unsafe_device_id_is_refused_and_nothing_is_registered(tmp_path, capsys, device_id):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "gateway.db"}"\n')
    assert main(["--config", str(config), "register-device", device_id, "--kind", "watch",
                 "--password-file", str(tmp_path / "passwd")]) == 2
    assert "nothing registered" in capsys.readouterr().err
    assert not (tmp_path / "passwd").exists()
    assert not (tmp_path / "gateway.db").exists() or not OperationalStore(tmp_path / "gateway.db").device_ids()


def test_the_gateways_own_configured_account_name_is_refused_as_a_device_id(tmp_path, capsys):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[mqtt]\nusername = "gw-east"\n[store]\npath = "{tmp_path / "gateway.db"}"\n')
    assert main(["--config", str(config), "register-device", "gw-east", "--kind", "watch"]) == 2
    assert "reserved for a broker account that is not a device" in capsys.readouterr().err

# -- console accounts and API tokens -------------------------------------------------------------

@pytest.fixture
def web_db(tmp_path, monkeypatch):
    path = tmp_path / "web.db"
    monkeypatch.setenv("ELDERCARE_WEB__DB_PATH", str(path))
    return path


def test_create_admin_reads_the_password_from_standard_input_and_the_admin_can_log_in(web_db, monkeypatch, capsys):
    from dashboards.accounts import AccountStore, Role

    monkeypatch.setattr("sys.stdin", io.StringIO("night shift password\n"))
    assert main(["create-admin", "lin", "--password-stdin"]) == 0
    assert "admin account 'lin' created" in capsys.readouterr().out
    accounts = AccountStore(web_db)
    assert accounts.verify_login("lin", "night shift password", 0).role == Role.ADMIN
    accounts.close()


def test_create_admin_refuses_a_password_on_the_command_line_a_short_one_and_no_terminal(web_db, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["create-admin", "lin", "--password", "night shift password"])
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["create-admin", "lin", "--password-stdin"]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["create-admin", "lin"]) == 2
    assert "use --password-stdin" in capsys.readouterr().err


def test_a_token_is_printed_once_works_and_is_revoked_by_name(web_db, capsys):
    from dashboards.accounts import AccountStore

    assert main(["create-token", "district-hub"]) == 0
    token = capsys.readouterr().out.strip()
    accounts = AccountStore(web_db)
    assert accounts.token_actor(token).name == "token:district-hub"
    assert main(["revoke-token", "district-hub"]) == 0
    assert accounts.token_actor(token) is None
    assert main(["revoke-token", "district-hub"]) == 2
    accounts.close()


def test_the_acl_command_prints_the_production_acl_for_the_configured_prefix(tmp_path, capsys):
    config = tmp_path / "gateway.toml"
    config.write_text('[mqtt]\ntopic_prefix = "acme/eldercare"\n')
    assert main(["--config", str(config), "acl"]) == 0
    out = capsys.readouterr().out
    assert "pattern write acme/eldercare/+/%u/+\n" in out and "pattern read acme/eldercare/+/%u/cmd\n" in out
    assert "simulator" not in out


def test_with_a_store_url_the_device_and_the_admin_account_go_to_postgresql(tmp_path, monkeypatch, postgres_url):
    from dashboards.accounts import AccountStore, Role

    monkeypatch.setenv("ELDERCARE_STORE__URL", postgres_url)
    monkeypatch.setenv("ELDERCARE_STORE__PATH", str(tmp_path / "gateway.db"))
    monkeypatch.setenv("ELDERCARE_WEB__DB_PATH", str(tmp_path / "web.db"))
    assert main(["register-device", "w1", "--kind", "watch"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("night shift password\n"))
    assert main(["create-admin", "lin", "--password-stdin"]) == 0
    assert OperationalStore(postgres_url).device("w1") is not None
    accounts = AccountStore(postgres_url)
    assert accounts.verify_login("lin", "night shift password", 0).role == Role.ADMIN
    accounts.close()
    assert not (tmp_path / "gateway.db").exists() and not (tmp_path / "web.db").exists()


def test_an_unreachable_store_url_is_named_in_one_line_with_no_password(monkeypatch, capsys):
    from devtools.localservices import free_port

    monkeypatch.setenv("ELDERCARE_STORE__URL", f"postgresql://gw:secret@127.0.0.1:{free_port()}/eldercare")
    assert main(["register-device", "w1", "--kind", "watch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eldercare-gateway: store.url: cannot connect to postgresql://gw@127.0.0.1:")
    assert "secret" not in err and len(err.strip().splitlines()) == 1


def test_a_residents_record_links_are_revoked_by_resident_id(web_db, monkeypatch, capsys):
    from dashboards.record_links import RecordLinks

    monkeypatch.setenv("ELDERCARE_ALERTS__COMMUNITY_FILE", str(REPO / "examples" / "community.toml"))
    links = RecordLinks(web_db)
    key = links.create("r-001", 0)
    assert main(["revoke-record-links", "r-001"]) == 0
    assert "1 record link(s) of r-001 stopped" in capsys.readouterr().out
    assert links.resident_of(key) is None
    assert main(["revoke-record-links", "r-999"]) == 2
    assert "no resident 'r-999'" in capsys.readouterr().err
    links.close()

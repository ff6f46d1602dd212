"""
The clients' configuration: the environment over the file, what is
missing or malformed named with what to set, a key file others can read
refused, the key kept out of reprs and errors.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from everyskill.client_config import ConfigError, config_path, load

KEY = "esk_" + "A" * 36


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "config.toml",
        f'api_url = "http://file:1/"\napi_key = "{KEY}"\ndefault_skill = "general"\n'
        'unattributed = "skip"\ntimeout = 2.5\n[skills]\npdf = "pdf-extraction"\n',
    )
    config = load({"EVERYSKILL_CONFIG": str(config_file), "EVERYSKILL_API_URL": "http://env:2"})
    assert config.api_url == "http://env:2"
    assert config.api_key == KEY
    assert config.default_skill == "general" and config.unattributed == "skip"
    assert config.timeout == 2.5
    assert config.slug_of("pdf") == "pdf-extraction" and config.slug_of("docx") == "docx"
    assert KEY not in repr(config)


def test_no_file_and_the_environment_alone(tmp_path: Path) -> None:
    config = load(
        {
            "EVERYSKILL_CONFIG": str(tmp_path / "absent.toml"),
            "EVERYSKILL_API_URL": "https://api.example.com/",
            "EVERYSKILL_API_KEY": KEY,
            "EVERYSKILL_STATE_DIR": str(tmp_path / "state"),
        }
    )
    assert config.api_url == "https://api.example.com"
    assert config.state_dir == tmp_path / "state"
    assert config.unattributed == "default" and config.user_id is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"EVERYSKILL_API_KEY": KEY}, "EVERYSKILL_API_URL"),
        ({"EVERYSKILL_API_URL": "http://x:1"}, "EVERYSKILL_API_KEY"),
        ({"EVERYSKILL_API_URL": "x:1", "EVERYSKILL_API_KEY": KEY}, "http://"),
        (
            {"EVERYSKILL_API_URL": "http://x:1", "EVERYSKILL_API_KEY": KEY, "EVERYSKILL_UNATTRIBUTED": "all"},
            "EVERYSKILL_UNATTRIBUTED",
        ),
        (
            {"EVERYSKILL_API_URL": "http://x:1", "EVERYSKILL_API_KEY": KEY, "EVERYSKILL_TIMEOUT": "soon"},
            "EVERYSKILL_TIMEOUT",
        ),
    ],
)
def test_what_is_missing_or_wrong_is_named(
    tmp_path: Path, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as raised:
        load({"EVERYSKILL_CONFIG": str(tmp_path / "absent.toml"), **environ})
    assert KEY not in str(raised.value)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "config.toml", f'api_url = "http://x:1"\napi_key = "{KEY}"\n', mode=0o644
    )
    with pytest.raises(ConfigError, match="chmod 600"):
        load({"EVERYSKILL_CONFIG": str(config_file)})
    config_file.chmod(0o600)
    assert load({"EVERYSKILL_CONFIG": str(config_file)}).api_key == KEY


def test_a_file_without_the_key_may_be_readable(tmp_path: Path) -> None:
    config_file = write(tmp_path / "config.toml", 'api_url = "http://x:1"\n', mode=0o644)
    config = load({"EVERYSKILL_CONFIG": str(config_file), "EVERYSKILL_API_KEY": KEY})
    assert config.api_url == "http://x:1"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('api_url = "http://x:1"\napi_kye = "k"\n', "api_kye"),
        ('api_url = "http://x:1\n', "not valid TOML"),
        ('api_url = "http://x:1"\n[skills]\npdf = 3\n', r"\[skills\]"),
        ('api_url = "http://x:1"\nuser_id = 7\n', "user_id"),
    ],
)
def test_a_malformed_file_is_named(tmp_path: Path, text: str, named: str) -> None:
    config_file = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError, match=named):
        load({"EVERYSKILL_CONFIG": str(config_file), "EVERYSKILL_API_KEY": KEY})


def test_the_default_file_is_in_the_users_config_directory(tmp_path: Path) -> None:
    assert config_path({"EVERYSKILL_CONFIG": str(tmp_path / "c.toml")}) == tmp_path / "c.toml"
    default = config_path({})
    assert default.name == "config.toml" and default.parent.name == "everyskill"
    assert str(default).startswith(os.path.expanduser("~"))


@pytest.mark.parametrize("value", ['""', '"   "', '"' + "u" * 201 + '"'])
def test_a_blank_or_overlong_user_or_skill_is_refused(tmp_path: Path, value: str) -> None:
    for key in ("user_id", "default_skill"):
        config_file = write(tmp_path / "config.toml", f'api_url = "http://x:1"\n{key} = {value}\n')
        with pytest.raises(ConfigError, match=key):
            load({"EVERYSKILL_CONFIG": str(config_file), "EVERYSKILL_API_KEY": KEY})

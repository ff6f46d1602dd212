"""The configuration of the project's own clients (``everyskill-hook``, ``everyskill-mcp``).

Contract
--------
- :func:`load` reads a TOML file and then the environment, whose variables
  win over the file's keys:

  =========================  =====================  =================================
  variable                   file key               meaning
  =========================  =====================  =================================
  ``EVERYSKILL_API_URL``     ``api_url``            the server, e.g. ``http://127.0.0.1:8000``
                                                    (the API is its ``/v1``)
  ``EVERYSKILL_API_KEY``     ``api_key``            the tenant key (``esk_...``)
  ``EVERYSKILL_USER_ID``     ``user_id``            the user the data is recorded for
                                                    (a user id of the tenant); none:
                                                    anonymous
  ``EVERYSKILL_DEFAULT_SKILL``  ``default_skill``   the slug that usage outside any
                                                    catalogue skill is recorded under
  ``EVERYSKILL_UNATTRIBUTED``  ``unattributed``     ``default`` (record such usage under
                                                    the default skill, the default when
                                                    one is set) or ``skip``
  ``EVERYSKILL_STATE_DIR``   ``state_dir``          the spool, the hook's state and log
  ``EVERYSKILL_TIMEOUT``     ``timeout``            seconds for one call of the API
  ``EVERYSKILL_HOOK_DEADLINE``  ``hook_deadline``   seconds after its start when the hook
                                                    stops waiting for the API (0.4)
  =========================  =====================  =================================

  and the file's ``[skills]`` table maps an assistant's skill name to a
  catalogue slug when they differ (by default a skill's name is its slug).
- The file is ``EVERYSKILL_CONFIG`` when set, else ``config.toml`` in the
  user's configuration directory (``platformdirs``:
  ``~/.config/everyskill/config.toml`` on Linux). A missing file is no
  error; a file that holds ``api_key`` and can be read by other users
  (any group or other permission bit) is refused, as ``ssh`` refuses a
  private key: ``chmod 600`` it. The state directory defaults to the
  user's state directory (``~/.local/state/everyskill`` on Linux).
- Anything missing or malformed is a :class:`ConfigError` that names the
  variable or key and says what to set; the key itself never appears in
  an error or a ``repr``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs

__all__ = ["ClientConfig", "ConfigError", "config_path", "load"]

_APP = "everyskill"
_SETTINGS = {
    "api_url": "EVERYSKILL_API_URL",
    "api_key": "EVERYSKILL_API_KEY",
    "user_id": "EVERYSKILL_USER_ID",
    "default_skill": "EVERYSKILL_DEFAULT_SKILL",
    "unattributed": "EVERYSKILL_UNATTRIBUTED",
    "state_dir": "EVERYSKILL_STATE_DIR",
    "timeout": "EVERYSKILL_TIMEOUT",
    "hook_deadline": "EVERYSKILL_HOOK_DEADLINE",
}


class ConfigError(Exception):
    """The clients' configuration is missing or wrong; the message says what to set."""


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """A client's settings; see the module's contract."""

    api_url: str
    api_key: str = dataclasses.field(repr=False)
    user_id: str | None = None
    default_skill: str | None = None
    unattributed: Literal["default", "skip"] = "default"
    skills: Mapping[str, str] = dataclasses.field(default_factory=dict)
    state_dir: Path = dataclasses.field(
        default_factory=lambda: Path(platformdirs.user_state_dir(_APP))
    )
    timeout: float = 5.0
    hook_deadline: float = 0.4

    def slug_of(self, skill_name: str) -> str:
        """The catalogue slug of an assistant's skill name."""
        return self.skills.get(skill_name, skill_name)


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The configuration file :func:`load` reads."""
    environ = os.environ if environ is None else environ
    given = environ.get("EVERYSKILL_CONFIG")
    return Path(given) if given else Path(platformdirs.user_config_dir(_APP)) / "config.toml"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    unknown = sorted(set(data) - set(_SETTINGS) - {"skills"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; the keys are"
            f" {', '.join(sorted([*_SETTINGS, 'skills']))}"
        )
    if "api_key" in data and os.name == "posix":
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path} holds api_key and other users can read it: run `chmod 600 {path}`"
            )
    return data


def load(environ: Mapping[str, str] | None = None) -> ClientConfig:
    """The configuration, from the file and the environment; see the contract."""
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    data = _read_file(path)
    values: dict[str, Any] = {}
    for key, variable in _SETTINGS.items():
        value = environ.get(variable)
        if value is not None and value.strip():
            values[key] = value.strip()
        elif key in data:
            values[key] = data[key]
    for key in ("api_url", "api_key"):
        if not isinstance(values.get(key), str) or not values[key]:
            raise ConfigError(f"set {_SETTINGS[key]} (or {key} in {path})")
    for key in ("user_id", "default_skill"):
        if key in values and not isinstance(values[key], str):
            raise ConfigError(f"{key} in {path} must be a string")
        if key in values:
            values[key] = values[key].strip()
            if not 1 <= len(values[key]) <= 200 or "\x00" in values[key]:
                raise ConfigError(
                    f"{_SETTINGS[key]} (or {key} in {path}) must be 1 to 200 characters,"
                    " without NUL"
                )
    api_url = values["api_url"]
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{_SETTINGS['api_url']} must be an http:// or https:// URL, such as"
            " http://127.0.0.1:8000"
        )
    unattributed = values.get("unattributed", "default")
    if unattributed not in ("default", "skip"):
        raise ConfigError(f"{_SETTINGS['unattributed']} must be 'default' or 'skip'")
    timeout = _seconds(values, "timeout", 5.0)
    hook_deadline = _seconds(values, "hook_deadline", 0.4)
    skills = data.get("skills", {})
    if not isinstance(skills, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in skills.items()
    ):
        raise ConfigError(f"[skills] in {path} must map skill names to slugs (strings)")
    state_dir = values.get("state_dir")
    if state_dir is not None and not isinstance(state_dir, str):
        raise ConfigError(f"state_dir in {path} must be a string (a directory)")
    return ClientConfig(
        api_url=api_url.rstrip("/"),
        api_key=values["api_key"],
        user_id=values.get("user_id"),
        default_skill=values.get("default_skill"),
        unattributed=unattributed,
        skills=skills,
        state_dir=Path(state_dir).expanduser() if state_dir else Path(platformdirs.user_state_dir(_APP)),
        timeout=timeout,
        hook_deadline=hook_deadline,
    )


def _seconds(values: Mapping[str, Any], key: str, default: float) -> float:
    try:
        seconds = float(values.get(key, default))
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 < seconds <= 300:
        raise ConfigError(f"{_SETTINGS[key]} must be a number of seconds, 0 to 300")
    return seconds

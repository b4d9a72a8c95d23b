from pathlib import Path

import pytest

from jobtrace import _config
from jobtrace.errors import ConfigurationError


def test_arguments_win_over_environment_which_wins_over_defaults(tmp_path: Path) -> None:
    env = {
        _config.ENV_URL: f"sqlite:///{tmp_path}/env.db",
        _config.ENV_FLUSH_INTERVAL: "0.5",
        _config.ENV_EXPERIMENT: "from-env",
    }
    from_env = _config.resolve(env=env)
    assert from_env.url == f"sqlite:///{tmp_path}/env.db"
    assert from_env.flush_interval == 0.5
    assert from_env.experiment == "from-env"
    explicit = _config.resolve(url="memory://x", flush_interval=0.25, experiment="arg", env=env)
    assert (explicit.url, explicit.flush_interval, explicit.experiment) == (
        "memory://x",
        0.25,
        "arg",
    )


def test_default_store_lives_in_the_jobtrace_directory(tmp_path: Path) -> None:
    settings = _config.resolve(env={_config.ENV_DIR: str(tmp_path / "d")})
    assert settings.url == f"sqlite:///{tmp_path / 'd' / 'jobtrace.db'}"
    assert settings.reports_dir == tmp_path / "d" / "reports"


def test_relative_sqlite_paths_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _config.resolve(url="sqlite:///rel/x.db", env={}).url == f"sqlite:///{tmp_path}/rel/x.db"
    assert _config.resolve(url="sqlite:////abs/x.db", env={}).url == "sqlite:////abs/x.db"


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        _config.resolve(url="mongodb://host/db", env={})
    message = str(info.value)
    assert "'mongodb'" in message
    for scheme in ("sqlite", "postgresql", "file", "memory"):
        assert scheme in message


@pytest.mark.parametrize("url", ["no-scheme-here", "sqlite://", "sqlite:///"])
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        _config.resolve(url=url, env={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (_config.ENV_FLUSH_INTERVAL, "soon"),
        (_config.ENV_FLUSH_INTERVAL, "0"),
        (_config.ENV_BUFFER_SIZE, "-5"),
    ],
)
def test_bad_numbers_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        _config.resolve(env={name: value})


def test_disabled_by_environment() -> None:
    assert _config.resolve(env={_config.ENV_DISABLED: "1"}).enabled is False
    assert _config.resolve(env={}).enabled is True

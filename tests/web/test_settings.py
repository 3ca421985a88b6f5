"""Settings come from the environment; bad values stop the process with the variable's name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from clinic_eval import settings as project_settings

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 20 + "-0123456789-abcdefghijklmnopqrstuvwxyz"


def manage(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run manage.py with exactly these settings variables, nothing inherited."""
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    base["VAR_DIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_debug_off_without_secret_key_refuses_to_start(tmp_path: Path) -> None:
    result = manage(["check"], {"DEBUG": "0"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr
    assert "Traceback" not in result.stderr, "a configuration error is one clear line"


def test_default_is_debug_off_so_the_key_is_required(tmp_path: Path) -> None:
    result = manage(["check"], {}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_a_short_secret_key_is_refused_in_production(tmp_path: Path) -> None:
    result = manage(["check"], {"DEBUG": "0", "SECRET_KEY": "changeme"}, tmp_path)
    assert result.returncode != 0
    assert "at least 50 characters" in result.stderr


def test_a_secret_key_may_come_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    key_file.write_text(GOOD_KEY + "\n")
    result = manage(["check"], {"DEBUG": "0", "SECRET_KEY_FILE": str(key_file)}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_debug_mode_starts_with_embedded_defaults(tmp_path: Path) -> None:
    result = manage(["check"], {"DEBUG": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "DATABASE_URL",
            "mysql://x@localhost/db",
            "DATABASE_URL must be a postgres:// or sqlite://",
        ),
        ("DATABASE_URL", "not a url", "DATABASE_URL"),
        ("CELERY_BROKER_URL", "kafka://x", "CELERY_BROKER_URL must use one of"),
        ("SESSION_IDLE_TIMEOUT_MINUTES", "soon", "SESSION_IDLE_TIMEOUT_MINUTES must be an integer"),
        ("SESSION_IDLE_TIMEOUT_MINUTES", "0", "SESSION_IDLE_TIMEOUT_MINUTES must be at least 1"),
        ("DEBUG", "maybe", "DEBUG must be one of"),
        ("IMPORT_MAX_BYTES", "10", "IMPORT_MAX_BYTES must be at least 1024"),
        ("CACHE_URL", "memcached://x", "CACHE_URL must be a redis:// URL"),
    ],
)
def test_bad_values_name_their_variable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = {"DEBUG": "1", variable: value}
    result = manage(["check"], env, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_env_helpers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_INT", " 42 ")
    monkeypatch.setenv("X_LIST", "a.example, b.example,,")
    monkeypatch.setenv("X_EMPTY", "  ")
    assert project_settings.env_bool("X_BOOL", False) is True
    assert project_settings.env_int("X_INT", 0) == 42
    assert project_settings.env_list("X_LIST", []) == ["a.example", "b.example"]
    assert project_settings.env_str("X_EMPTY", "default") == "default"
    monkeypatch.setenv("X_INT_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="X_INT_FILE=.* cannot be read"):
        project_settings.env_int("X_INT", 0)


def test_session_idle_timeout_drives_the_cookie_age(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.SESSION_COOKIE_AGE)"
    result = manage(
        ["shell", "--no-imports", "-c", code],
        {"DEBUG": "1", "SESSION_IDLE_TIMEOUT_MINUTES": "7"},
        tmp_path,
    )
    assert result.stdout.strip() == "420", result.stderr


def test_sqlite_default_lives_in_the_var_directory(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"
    result = manage(["shell", "--no-imports", "-c", code], {"DEBUG": "1"}, tmp_path)
    assert result.stdout.strip() == str(tmp_path / "clinic_eval.sqlite3"), result.stderr


def test_a_cache_url_shares_reports_through_redis(tmp_path: Path) -> None:
    """The results page's cache round-trips through the real Redis when CACHE_URL is set."""
    code = (
        "from django.core.cache import caches; cache = caches['default']; "
        "cache.set('probe', {'a': 1}, 30); print(type(cache).__name__, cache.get('probe'))"
    )
    result = manage(
        ["shell", "--no-imports", "-c", code],
        {"DEBUG": "1", "CACHE_URL": "redis://127.0.0.1:6379/3"},
        tmp_path,
    )
    assert result.stdout.strip() == "RedisCache {'a': 1}", result.stderr

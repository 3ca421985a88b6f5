"""The production process layout, read from the Dockerfile and docker-compose.yml.

A test that runs the app "as deployed" takes its command lines and settings from the same files
the containers are built from, so a change there is a change in what the test runs. Only what a
container engine would supply differently on one machine is replaced: the executable (this
virtual environment's Python), addresses, paths and secrets.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import requests
import yaml
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest

ROOT = Path(__file__).resolve().parents[2]
# The app containers' data volume (docker-compose.yml, Dockerfile's VAR_DIR).
CONTAINER_VAR_DIR = "/var/lib/clinic-eval"
# A default in compose's interpolation syntax: ${NAME:-default}.
DEFAULTED = re.compile(r"\$\{\w+:-([^}]*)\}")


def dockerfile_command() -> list[str]:
    """The web image's CMD, e.g. ``["gunicorn", "clinic_eval.wsgi:application", ...]``."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    (cmd,) = (line for line in lines if line.startswith("CMD "))
    return json.loads(cmd.removeprefix("CMD "))


def gunicorn_arguments(port: int) -> list[str]:
    """The Dockerfile's gunicorn arguments, bound to 127.0.0.1:``port`` instead of 0.0.0.0:8000."""
    program, *arguments = dockerfile_command()
    assert program == "gunicorn", program
    bind = arguments.index("--bind") + 1
    arguments[bind] = f"127.0.0.1:{port}"
    return arguments


def compose_service(name: str) -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]


def compose_command(service: str, *, var_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """A compose service's ``celery ...`` command run with this Python, its data volume at
    ``var_dir``; ``extra`` adds options (a node name per GPU, as docs/deployment.md does)."""
    program, *arguments = compose_service(service)["command"]
    assert program == "celery", program
    arguments = [argument.replace(CONTAINER_VAR_DIR, str(var_dir)) for argument in arguments]
    return [sys.executable, "-m", "celery", *arguments, *extra]


def compose_environment(service: str) -> dict[str, str]:
    """The service's environment as compose would set it with an empty .env: every literal
    value and every ``${NAME:-default}`` default. Values compose requires from .env (the secret,
    the database password) are left out for the caller to give."""
    environment = {}
    for name, value in compose_service(service)["environment"].items():
        text = str(value)
        defaulted = DEFAULTED.fullmatch(text)
        if defaulted:
            environment[name] = defaulted[1]
        elif "${" not in text:
            environment[name] = text
    return environment


class _BehindTlsProxy(HTTPAdapter):
    """Sends what a TLS-terminating proxy forwards: the browser's cookies, secure ones included
    (the proxy's own hop to gunicorn is plain HTTP, where a client library holds those back)."""

    def __init__(self, jar: requests.cookies.RequestsCookieJar) -> None:
        super().__init__()
        self.jar = jar

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.jar)
        if cookies:
            request.headers["Cookie"] = cookies
        return super().send(request, *args, **kwargs)


def proxied_session(base_url: str) -> requests.Session:
    """A client as a TLS-terminating proxy forwards it: ``X-Forwarded-Proto: https`` (read with
    ``BEHIND_TLS_PROXY=1``), the browser's https origin, and its secure cookies."""
    session = requests.Session()
    session.mount("http://", _BehindTlsProxy(session.cookies))
    session.headers.update(
        {"X-Forwarded-Proto": "https", "Origin": base_url.replace("http://", "https://", 1)}
    )
    return session

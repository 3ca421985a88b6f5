"""The security baseline: deployment checks, CSP, sign-in lockout, sessions, redirects, uploads,
server-side fetches and the audit trail's immutability."""

from __future__ import annotations

import http.server
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.test import Client
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from alignment_jobs.generation import specs
from clinic_eval.accounts.signals import SESSION_SIGNED_IN_AT
from clinic_eval.audit import services as audit_services
from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, AuditEvent, AuditImmutable, Study, User, UserSession
from clinic_eval.studies import services
from tests.conftest import logged_in
from tests.support.factories import CaseFactory, UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple 42"
NOT_LOADABLE = "give an absolute path on the worker's disk|outside the model directories"


def sign_in(client: Client, username: str, password: str, **extra: str) -> int:
    response = client.post(reverse("login"), {"username": username, "password": password}, **extra)
    return response.status_code


@pytest.fixture
def doctor(db: None) -> User:
    user = UserFactory(username="dr-lockout", role=User.Role.PHYSICIAN)
    user.set_password(PASSWORD)
    user.save()
    return user


# --- Deployment -----------------------------------------------------------------------------


def production_environment(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "DEBUG", "SECRET_KEY", "DATABASE_URL", "SESSION_"))
    }
    env.update(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="clinic.example.org",
        VAR_DIR=str(tmp_path),
    )
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)" in result.stdout


def test_production_defaults_are_the_strict_ones(tmp_path: Path) -> None:
    probe = (
        "from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_PRELOAD, s.CSRF_COOKIE_HTTPONLY, "
        "s.SECURE_PROXY_SSL_HEADER if hasattr(s, 'SECURE_PROXY_SSL_HEADER') else None)"
    )
    env = production_environment(tmp_path)
    env["DJANGO_SETTINGS_MODULE"] = "clinic_eval.settings"
    run = [sys.executable, "-c", f"import django; django.setup(); {probe}"]
    direct = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert direct.stdout.split() == ["True", "True", "True", "31536000", "True", "True", "None"]
    proxied = subprocess.run(
        run, cwd=ROOT, env={**env, "BEHIND_TLS_PROXY": "1"}, capture_output=True, text=True
    )
    assert "('HTTP_X_FORWARDED_PROTO', 'https')" in proxied.stdout


def test_health_checks_are_exempt_from_the_https_redirect(settings: object) -> None:
    settings.SECURE_SSL_REDIRECT = True  # type: ignore[attr-defined]
    assert Client().get("/healthz").status_code == 200
    redirected = Client().get(reverse("login"))
    assert redirected.status_code == 301
    assert redirected["Location"].startswith("https://")


# --- Content-Security-Policy ----------------------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"""(href|src|action)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def test_no_template_carries_inline_script_or_event_handlers() -> None:
    offenders = []
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        for pattern in (INLINE_SCRIPT, EVENT_HANDLER, JAVASCRIPT_URL):
            offenders += [
                f"{template.relative_to(ROOT)}: {m.group(0)}" for m in pattern.finditer(text)
            ]
    assert offenders == []


def test_every_page_type_sends_a_policy_without_inline_script(
    coordinator: User, physician: User, study: Study
) -> None:
    pages = [
        (Client(), reverse("login")),
        (logged_in(coordinator), reverse("coordinator:study_list")),
        (logged_in(coordinator), reverse("coordinator:study_detail", args=[study.pk])),
        (logged_in(coordinator), reverse("coordinator:study_audit", args=[study.pk])),
        (logged_in(physician), reverse("rater:home")),
    ]
    for client, url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        directives = dict(
            part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
        )
        assert directives["script-src"] == "'self'", url
        assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
        assert "unsafe" not in response["Content-Security-Policy"], url
        assert not INLINE_SCRIPT.search(response.content.decode()), url
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"


# --- Sign-in throttling ---------------------------------------------------------------------


def test_repeated_failures_lock_the_account_for_that_address(doctor: User) -> None:
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert sign_in(client, doctor.username, "wrong password") == 200
    locked = client.post(reverse("login"), {"username": doctor.username, "password": "wrong"})
    assert locked.status_code == 429
    assert "Sign-in paused" in locked.content.decode()
    # Even the right password is refused while locked: guessing on cannot succeed.
    assert sign_in(client, doctor.username, PASSWORD) == 429
    assert "_auth_user_id" not in client.session

    # The real physician at another computer is not locked out by someone else's guessing.
    assert sign_in(Client(), doctor.username, PASSWORD, REMOTE_ADDR="10.1.2.3") == 302

    actions = list(
        AuditEvent.objects.filter(actor_username=doctor.username).values_list("action", flat=True)
    )
    assert actions.count(AuditEvent.Action.LOGIN_FAILED) >= limit
    assert AuditEvent.Action.LOCKED_OUT in actions
    assert AuditEvent.Action.LOGIN in actions


def test_the_lockout_ends_after_the_cool_off(doctor: User) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, doctor.username, "wrong password")
    assert sign_in(client, doctor.username, PASSWORD) == 429
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.first().attempt_time  # type: ignore[union-attr]
        - settings.AXES_COOLOFF_TIME
        - timedelta(seconds=1)
    )
    assert sign_in(client, doctor.username, PASSWORD) == 302


def test_the_api_token_endpoint_is_throttled_too(doctor: User) -> None:
    client = Client()
    url = reverse("api:token")
    statuses = [
        client.post(url, {"username": doctor.username, "password": "wrong"}).status_code
        for _ in range(settings.AXES_FAILURE_LIMIT + 1)
    ]
    assert statuses[0] == 400 and statuses[-1] == 429
    assert client.post(url, {"username": doctor.username, "password": PASSWORD}).status_code == 429


# --- Sessions -------------------------------------------------------------------------------


def session_of(client: Client) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_sign_in_records_when_and_tracks_the_session(doctor: User) -> None:
    client = Client()
    before = time.time()
    assert sign_in(client, doctor.username, PASSWORD) == 302
    after = time.time()
    # The sign-in's own timestamp, which the absolute timeout counts from.
    assert before <= client.session[SESSION_SIGNED_IN_AT] <= after
    assert UserSession.objects.filter(user=doctor, session_key=session_of(client)).exists()


def test_logout_ends_the_session_on_the_server(doctor: User) -> None:
    client = Client()
    sign_in(client, doctor.username, PASSWORD)
    stolen = session_of(client)
    assert client.post(reverse("logout")).status_code == 302
    assert not Session.objects.filter(session_key=stolen).exists()
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = stolen
    assert replay.get(reverse("rater:home")).status_code == 302, "a copied cookie is dead"
    assert AuditEvent.objects.filter(action=AuditEvent.Action.LOGOUT, actor=doctor).exists()


def test_the_absolute_timeout_ends_an_active_session(doctor: User) -> None:
    client = Client()
    sign_in(client, doctor.username, PASSWORD)
    session = client.session
    session[SESSION_SIGNED_IN_AT] = time.time() - settings.SESSION_ABSOLUTE_TIMEOUT_HOURS * 3600 - 5
    session.save()
    old_key = session_of(client)
    response = client.get(reverse("rater:home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not Session.objects.filter(session_key=old_key).exists()
    assert (
        AuditEvent.objects.filter(action=AuditEvent.Action.SESSION_EXPIRED, actor=doctor).count()
        == 1
    )
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.LOGOUT, actor=doctor).exists()


def get_expiry(client: Client) -> int:
    return client.session.get_expiry_age()


def test_the_idle_timeout_is_the_cookie_lifetime(doctor: User) -> None:
    client = Client()
    sign_in(client, doctor.username, PASSWORD)
    client.get(reverse("rater:home"))
    assert client.session.get_expiry_age() == settings.SESSION_IDLE_TIMEOUT_MINUTES * 60
    stored = Session.objects.get(pk=client.session.session_key).expire_date
    assert abs((stored - timezone.now()).total_seconds() - get_expiry(client)) < 5, (
        "the deadline in the database is the timeout from now"
    )


def test_disabling_an_account_ends_its_sessions_and_tokens(doctor: User, coordinator: User) -> None:
    ward, home = Client(), Client()
    sign_in(ward, doctor.username, PASSWORD)
    sign_in(home, doctor.username, PASSWORD, REMOTE_ADDR="10.9.8.7")
    keys = [session_of(ward), session_of(home)]
    Token.objects.create(user=doctor)
    assert Session.objects.filter(session_key__in=keys).count() == 2

    doctor.is_active = False
    doctor.save()

    assert not Session.objects.filter(session_key__in=keys).exists()
    assert not Token.objects.filter(user=doctor).exists()
    for client in (ward, home):
        assert client.get(reverse("rater:home")).status_code == 302
    event = AuditEvent.objects.get(action=AuditEvent.Action.ACCOUNT_DISABLED)
    assert "2 session(s) and 1 API token(s)" in event.summary


def test_saving_an_active_account_keeps_its_sessions(doctor: User) -> None:
    client = Client()
    sign_in(client, doctor.username, PASSWORD)
    doctor.first_name = "Ada"
    doctor.save()
    assert client.get(reverse("rater:home")).status_code == 200


# --- Redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        " //evil.example",
    ],
)
def test_login_never_redirects_off_site(doctor: User, target: str) -> None:
    client = Client()
    response = client.post(
        f"{reverse('login')}?next={target}",
        {"username": doctor.username, "password": PASSWORD, "next": target},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_login_follows_a_local_next(doctor: User) -> None:
    response = Client().post(
        reverse("login"),
        {"username": doctor.username, "password": PASSWORD, "next": reverse("rater:home")},
    )
    assert response["Location"] == reverse("rater:home")


# --- Uploads and downloads ------------------------------------------------------------------


def test_uploads_are_never_served_back(coordinator: User, study: Study) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    client = logged_in(coordinator)
    response = client.post(
        reverse("coordinator:import_create", args=[study.pk]),
        {"kind": "cases", "file": _upload("cases.html", page)},
    )
    # Refused by format, or stored and never served: either way no route returns the bytes.
    body = response.content.decode()
    assert "<script>alert" not in body
    assert not settings.MEDIA_URL or settings.MEDIA_URL == "/"
    for path in ("/media/cases.html", "/uploads/cases.html", "/static/cases.html"):
        with pytest.raises(Resolver404):
            resolve(path)
        assert client.get(path).status_code == 404


def _upload(name: str, content: bytes) -> object:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="text/html")


def test_downloads_are_attachments_that_browsers_cannot_sniff_into_html(
    coordinator: User, study: Study
) -> None:
    CaseFactory(study=study, narrative="<img src=x onerror=alert(1)>")
    response = logged_in(coordinator).get(
        reverse("coordinator:study_export_file", args=[study.pk, "cases.csv"])
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"


# --- No server-side fetch of user-supplied URLs ---------------------------------------------


@pytest.fixture
def canary() -> Iterator[dict[str, object]]:
    """A real HTTP server on localhost that counts every request it receives."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_HEAD = do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_port}", "hits": hits}
    server.shutdown()


def test_user_supplied_urls_are_refused_and_never_fetched(
    coordinator: User, study: Study, canary: dict
) -> None:
    url = canary["url"]
    arm = services.arm_create(study=study, label="SFT", kind=Arm.Kind.MODEL)
    for field in ("base_model_path", "adapter_path"):
        values = {"base_model_path": f"{url}/model", "adapter_path": ""}
        values[field] = f"{url}/{field}"
        with pytest.raises(DomainError, match=NOT_LOADABLE):
            specs.spec_save(arm=arm, **values)
    client = logged_in(coordinator)
    client.post(
        reverse("coordinator:import_create", args=[study.pk]),
        {
            "kind": "cases",
            "file": _upload("cases.jsonl", f'{{"case_id": "{url}/case"}}\n'.encode()),
        },
    )
    client.post(
        reverse("api:case_list", args=[study.pk]),
        {"cases": [{"case_id": "c-url", "narrative": f"see {url}/narrative ![x]({url}/img.png)"}]},
        content_type="application/json",
    )
    time.sleep(0.2)
    assert canary["hits"] == [], "the server fetched a URL a user supplied"


def test_hub_ids_are_refused_before_anything_is_loaded(study: Study) -> None:
    arm = services.arm_create(study=study, label="GRPO", kind=Arm.Kind.MODEL)
    with pytest.raises(DomainError, match=NOT_LOADABLE):
        specs.spec_save(arm=arm, base_model_path="meta-llama/Llama-3.1-8B", adapter_path="")


# --- Audit trail ----------------------------------------------------------------------------


def test_audit_events_cannot_be_changed_or_removed(coordinator: User) -> None:
    event = audit_services.audit_record(action=AuditEvent.Action.EXPORT, actor=coordinator)
    event.summary = "nothing happened"
    with pytest.raises(AuditImmutable):
        event.save()
    with pytest.raises(AuditImmutable):
        event.delete()
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.filter(pk=event.pk).update(summary="rewritten")
    with pytest.raises(AuditImmutable):
        AuditEvent.objects.filter(pk=event.pk).delete()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE clinic_eval_auditevent SET summary = 'rewritten'",
        "DELETE FROM clinic_eval_auditevent",
    ],
)
def test_the_database_refuses_to_rewrite_the_audit_trail(coordinator: User, statement: str) -> None:
    audit_services.audit_record(action=AuditEvent.Action.EXPORT, actor=coordinator)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditEvent.objects.count() == 1


# --- Malformed requests ---------------------------------------------------------------------


def test_a_nul_character_in_the_query_string_is_refused_not_a_500(
    coordinator: User, study: Study
) -> None:
    client = logged_in(coordinator)
    page = client.get(reverse("coordinator:case_list", args=[study.pk]), {"q": "a\x00b"})
    assert page.status_code == 400
    api = client.get(reverse("api:case_list", args=[study.pk]), {"stratum": "\x00"})
    assert api.status_code == 400 and "NUL" in api.json()["detail"]
    export = client.get(
        reverse("coordinator:study_export_file", args=[study.pk, "cases.csv"]), {"stratum": "\x00"}
    )
    assert export.status_code == 400


def test_unknown_api_paths_answer_json_and_pages_answer_html(coordinator: User) -> None:
    client = logged_in(coordinator)
    api = client.get("/api/studies/-1/")
    assert api.status_code == 404 and api.json() == {"detail": "Not found."}
    page = client.get("/no/such/page/")
    assert page.status_code == 404 and "<html" in page.content.decode()

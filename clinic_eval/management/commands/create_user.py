from __future__ import annotations

import secrets
import sys
from typing import Any

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from clinic_eval.errors import DomainError
from clinic_eval.models import User
from clinic_eval.studies import services


class Command(BaseCommand):
    help = "Create a coordinator or physician account; prints a generated password by default."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=User.Role.values)
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input instead of generating one",
        )
        parser.add_argument(
            "--superuser", action="store_true", help="Also give access to the Django admin"
        )
        parser.add_argument("--token", action="store_true", help="Create and print an API token")

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        generated = not options["password_stdin"]
        password = secrets.token_urlsafe(12) if generated else sys.stdin.readline().rstrip("\n")
        if not generated:
            try:
                validate_password(password, User(username=username, email=options["email"]))
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
        try:
            user = services.user_create(
                username=username,
                password=password,
                role=options["role"],
                email=options["email"],
                is_superuser=options["superuser"],
            )
        except (DomainError, ValidationError) as exc:
            message = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            raise CommandError(message) from None
        self.stdout.write(self.style.SUCCESS(f"Created {user.role} {user.username!r}"))
        if generated:
            self.stdout.write(f"password: {password}")
        if options["token"]:
            self.stdout.write(f"API token: {Token.objects.create(user=user).key}")

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from clinic_eval import synthetic


class Command(BaseCommand):
    help = (
        "Write synthetic, de-identified ART cases (no real patient) in the case import format, "
        "and optionally one simulated response per case for each of the arms "
        f"{', '.join(synthetic.SIMULATED_ARMS)}. The same --n and --seed give byte-identical files."
    )
    # Pure generation: it needs neither the database nor a checked project.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--n", type=int, default=8000, help="Number of cases (default 8000).")
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument(
            "--out", required=True, help="Cases file (JSON Lines), or - for standard output."
        )
        parser.add_argument(
            "--responses-out",
            help="Also write the simulated responses (JSON Lines) to this file, or - for stdout.",
        )
        parser.add_argument(
            "--summary",
            action="store_true",
            help="Print the distribution and the simulated arms' accuracy (to stderr when "
            "a file goes to stdout).",
        )

    def handle(
        self,
        *args: object,
        n: int,
        seed: int,
        out: str,
        responses_out: str | None,
        summary: bool,
        **options: object,
    ) -> None:
        if n < 1:
            raise CommandError(f"--n must be at least 1, got {n}.")
        if out == "-" and responses_out == "-":
            raise CommandError("Only one of --out and --responses-out can be '-' (stdout).")

        cases = synthetic.generate_cases(n=n, seed=seed)
        responses = None
        if responses_out or summary:
            responses = synthetic.generate_simulated_responses(cases, seed=seed)

        self._emit(out, synthetic.dumps_jsonl(cases), f"{len(cases)} cases")
        if responses_out and responses is not None:
            self._emit(
                responses_out, synthetic.dumps_jsonl(responses), f"{len(responses)} responses"
            )

        if summary:
            text = synthetic.summarize(cases, responses)
            to_stdout = "-" in (out, responses_out)
            stream = self.stderr if to_stdout else self.stdout
            # str keeps stderr free of the error colouring that OutputWrapper applies by default.
            stream.write(text, style_func=str, ending="")

    def _emit(self, target: str, text: str, what: str) -> None:
        if target == "-":
            self.stdout.write(text, ending="")
            return
        try:
            # Bytes, so no platform newline translation or locale encoding can change the file.
            Path(target).write_bytes(text.encode("utf-8"))
        except OSError as exc:
            raise CommandError(f"Cannot write {target}: {exc}") from exc
        self.stderr.write(f"Wrote {what} to {target}", style_func=str)

# The web server and the CPU worker. Generation on GPUs uses docker/gpu-worker.Dockerfile.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/var/lib/clinic-eval \
    STATIC_ROOT=/app/staticfiles \
    STATIC_MANIFEST=1

WORKDIR /app
RUN useradd --create-home --uid 10001 clinic \
    && mkdir -p /var/lib/clinic-eval \
    && chown clinic /var/lib/clinic-eval

COPY pyproject.toml README.md ./
COPY clinic_eval ./clinic_eval
COPY alignment_jobs ./alignment_jobs
RUN pip install -e .

COPY manage.py ./
COPY templates ./templates
COPY static ./static
# collectstatic needs settings but no secret or database; DEBUG=1 only for this build step.
RUN DEBUG=1 VAR_DIR=/tmp/build python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/build

USER clinic
EXPOSE 8000
CMD ["gunicorn", "clinic_eval.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]

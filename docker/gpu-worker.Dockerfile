# A Celery worker on queue "gpu" with vLLM and CUDA from the official vLLM image.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.33.0
FROM ${VLLM_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/var/lib/clinic-eval \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_ENABLE_V1_MULTIPROCESSING=0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY clinic_eval ./clinic_eval
COPY alignment_jobs ./alignment_jobs
# vLLM, torch and transformers come with the base image; install only the app's own needs.
RUN pip install -e . && mkdir -p /var/lib/clinic-eval
COPY manage.py ./
COPY templates ./templates

# The image's entrypoint starts vLLM's HTTP server; this worker loads models in-process instead.
ENTRYPOINT []
CMD ["celery", "--app=clinic_eval", "worker", "--queues=gpu", "--pool=solo", "--concurrency=1", "--loglevel=INFO"]

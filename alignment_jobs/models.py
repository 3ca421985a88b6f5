"""Generation specs attached to model arms, and the jobs, shards and items that run them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from alignment_jobs.prompts import DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE
from clinic_eval.models import Arm, Case, Study


class GenerationSpec(models.Model):
    """How one model arm turns a case into a response: checkpoint, prompt and sampling."""

    class Dtype(models.TextChoices):
        AUTO = "auto", "As saved in the checkpoint"
        BFLOAT16 = "bfloat16", "bfloat16"
        FLOAT16 = "float16", "float16"
        FLOAT32 = "float32", "float32"

    arm = models.OneToOneField(Arm, on_delete=models.CASCADE, related_name="generation_spec")
    base_model_path = models.CharField(max_length=500)
    adapter_path = models.CharField(max_length=500, blank=True)
    system_prompt = models.TextField(blank=True, default=DEFAULT_SYSTEM_PROMPT)
    user_template = models.TextField(default=DEFAULT_USER_TEMPLATE)
    use_chat_template = models.BooleanField(default=True)
    few_shot_k = models.PositiveSmallIntegerField(default=0)
    # External case ids the few-shot demonstrations are drawn from (never the case itself).
    few_shot_pool = models.JSONField(default=list, blank=True)
    temperature = models.FloatField(default=0.7)
    top_p = models.FloatField(default=1.0)
    max_tokens = models.PositiveIntegerField(default=512)
    n_samples = models.PositiveSmallIntegerField(default=1)
    seed = models.PositiveIntegerField(default=0)
    dtype = models.CharField(max_length=16, choices=Dtype.choices, default=Dtype.AUTO)
    tensor_parallel_size = models.PositiveSmallIntegerField(default=1)
    # Bumped whenever the prompt changes, so every response names the prompt it came from.
    template_version = models.PositiveIntegerField(default=1)
    base_config_sha256 = models.CharField(max_length=64, editable=False)
    adapter_config_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Generation spec for {self.arm}"


class GenerationJob(models.Model):
    class Engine(models.TextChoices):
        AUTO = "auto", "Automatic (vLLM where installed, else transformers)"
        VLLM = "vllm", "vLLM"
        TRANSFORMERS = "transformers", "transformers"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Finished"
        FINISHED_WITH_FAILURES = "finished_with_failures", "Finished with failures"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FINISHED_WITH_FAILURES, Status.CANCELLED)

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="generation_jobs")
    engine = models.CharField(max_length=16, choices=Engine.choices, default=Engine.AUTO)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.QUEUED)
    shard_size = models.PositiveIntegerField()
    item_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Generation job #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class GenerationShard(models.Model):
    """One arm x a chunk of cases: one Celery task, one engine call."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="shards")
    spec = models.ForeignKey(GenerationSpec, on_delete=models.CASCADE, related_name="shards")
    index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    claim_token = models.CharField(max_length=32, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    engine_seconds = models.FloatField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="shard_index_unique_in_job")
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.job} shard {self.index}"


class GenerationItem(models.Model):
    """One (case, arm) of a job; it yields the spec's n samples as responses."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    job = models.ForeignKey(GenerationJob, on_delete=models.CASCADE, related_name="items")
    shard = models.ForeignKey(GenerationShard, on_delete=models.CASCADE, related_name="items")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="+")
    arm = models.ForeignKey(Arm, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    completion_tokens = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["shard_id", "case_id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "case", "arm"], name="one_item_per_job_case_arm")
        ]
        indexes = [models.Index(fields=["job", "status"]), models.Index(fields=["shard", "status"])]

    def __str__(self) -> str:
        return f"{self.job} / {self.case_id} / {self.arm_id}"

"""Retry policies of task kinds: which errors are retried, how often, how long apart.

    policy = RetryPolicy(retry_for=(Unavailable,), max_retries=3, backoff_s=30,
                         backoff_max_s=600)
    app.task(**policy.celery_options())     # Celery mode: Celery's own autoretry
    policy.delay_s(retries=1)                # embedded mode: the runner waits this long

One policy object feeds both runners, so a task is retried the same way on a Celery
worker and in the embedded runner: Celery applies it itself (`autoretry_for`,
`retry_backoff`, `retry_backoff_max`, `retry_jitter`), and the in-process runner
computes the same delays with Celery's own function (exponential, capped, full
jitter: a random delay between 0 and `backoff_s * 2**retries`, at most
`backoff_max_s`). A task function learns its attempt number from its context and
reports "retrying" or "failed" to its job accordingly (`will_retry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RetryPolicy:
    """Retry errors of `retry_for` up to `max_retries` times with exponential backoff."""

    retry_for: tuple[type[BaseException], ...]
    max_retries: int
    #: Delay factor in seconds: retry n waits up to backoff_s * 2**(n-1) (Celery needs an int).
    backoff_s: int
    backoff_max_s: int
    jitter: bool = True

    def celery_options(self) -> dict[str, Any]:
        """Keyword arguments for `app.task(...)`."""
        return {
            "autoretry_for": self.retry_for,
            "max_retries": self.max_retries,
            "retry_backoff": max(1, int(self.backoff_s)),
            "retry_backoff_max": int(self.backoff_max_s),
            "retry_jitter": self.jitter,
        }

    def retryable(self, error: BaseException) -> bool:
        return isinstance(error, self.retry_for)

    def will_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number `attempt` (1 = the first run) failing with `error` is retried."""
        return self.retryable(error) and attempt <= self.max_retries

    def delay_s(self, retries: int) -> float:
        """Seconds before retry number `retries + 1` (`retries` already done), as Celery waits."""
        from celery.utils.time import get_exponential_backoff_interval

        return float(
            get_exponential_backoff_interval(
                factor=max(1, int(self.backoff_s)),
                retries=retries,
                maximum=int(self.backoff_max_s),
                full_jitter=self.jitter,
            )
        )

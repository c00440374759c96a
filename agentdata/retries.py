"""Retry policies of task kinds: which errors are retried, how often, how long apart.

    policy = export_policy(settings)         # or sync_policy, maintenance_policy
    app.task(**policy.celery_options())     # Celery mode: Celery's own autoretry
    policy.delay_s(retries=1)                # embedded mode: the runner waits this long

The policies, one per kind that has one (`workers.registry` gives each kind its policy):

    kind         retried on                               retries (setting)         backoff
    sync         Unavailable, DeadlineExceeded:            sync_max_retries (3)      sync_retry_backoff_s,
                 Snowflake or the server unreachable,                                capped by
                 timeouts                                                            sync_retry_backoff_max_s
    export       Unavailable: the server unreachable or    export_max_retries (2)    export_retry_backoff_s,
                 restarting, a connection lost mid-stream,                           capped by
                 a broken upload, local file I/O failing                             export_retry_backoff_max_s (5 min)
    maintenance  Unavailable, DeadlineExceeded, Internal:   maintenance_max_retries   maintenance_retry_backoff_s,
                 its rules are idempotent, so a second try  (1)                      capped at 5 min
                 is safe whatever failed

Anything else (bad SQL, a permission, a missing table, a bad spec) fails at once.
A job interrupted by a server restart is re-queued under its kind's policy too
(`agentdata.runner`), its interrupted attempt counting as one.

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

from agentdata.errors import DeadlineExceeded, InternalError, Unavailable
from agentdata.settings import Settings

#: The longest wait before a maintenance retry.
MAINTENANCE_BACKOFF_MAX_S = 300


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


def sync_policy(settings: Settings) -> RetryPolicy:
    """How sync runs are retried: the source or the server unreachable, or timed out."""
    return RetryPolicy(
        retry_for=(Unavailable, DeadlineExceeded),
        max_retries=settings.sync_max_retries,
        backoff_s=settings.sync_retry_backoff_s,
        backoff_max_s=settings.sync_retry_backoff_max_s,
    )


def export_policy(settings: Settings) -> RetryPolicy:
    """How exports are retried: the server unreachable or restarting, a lost connection
    (never a query that failed on its own: that would fail again)."""
    return RetryPolicy(
        retry_for=(Unavailable,),
        max_retries=settings.export_max_retries,
        backoff_s=settings.export_retry_backoff_s,
        backoff_max_s=settings.export_retry_backoff_max_s,
    )


def maintenance_policy(settings: Settings) -> RetryPolicy:
    """How clean-up runs are retried: once by default, on any failure but a refusal."""
    return RetryPolicy(
        retry_for=(Unavailable, DeadlineExceeded, InternalError),
        max_retries=settings.maintenance_max_retries,
        backoff_s=settings.maintenance_retry_backoff_s,
        backoff_max_s=MAINTENANCE_BACKOFF_MAX_S,
    )

"""Which steps make up each job type, in order, and which queue runs them.

Backups and restores use separate queues so that a burst of nightly backups never delays a restore
someone is waiting for (run ``qbm worker --queues restores`` on a dedicated machine if needed).
"""

from __future__ import annotations

from shared.records.job import JobType

BACKUP_STEPS = ("create", "transfer", "finalize")
RESTORE_STEPS = ("prepare", "recover", "verify")

STEPS: dict[str, tuple[str, ...]] = {
    JobType.BACKUP: BACKUP_STEPS,
    JobType.SHARD_BACKUP: BACKUP_STEPS,
    JobType.RESTORE: RESTORE_STEPS,
    JobType.SHARD_RESTORE: RESTORE_STEPS,
}


def family(job_type: str) -> str:
    """``backup`` or ``restore``: which chain runs jobs of this type."""
    return JobType(job_type).family


def queue_for(job_type: str) -> str:
    return "backups" if family(job_type) == "backup" else "restores"


def actor_name(job_type: str, step: str) -> str:
    return f"{family(job_type)}_{step}"


def next_step(job_type: str, done: dict) -> str | None:
    """The first step of the chain that has not recorded a result (None when all have)."""
    return next((s for s in STEPS[job_type] if s not in done), None)


def fan_out_items(job_type: str, step: str, done: dict) -> list | None:
    """The items a step runs for, one message each (a backup set's shards), or None for one message: a step
    fans out when the step before it recorded its items under ``fan_out``."""
    chain = STEPS[job_type]
    index = chain.index(step)
    if index == 0:
        return None
    items = (done.get(chain[index - 1]) or {}).get("fan_out")
    return list(items) if items else None


def item_record(step: str, item: object) -> str:
    """The name an item of a fanned-out step is recorded under (``transfer:3``)."""
    return f"{step}:{item}"

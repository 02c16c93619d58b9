"""Schedules: recurring backups with retention."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from shared.schedules.store import SCHEDULE_TYPES
from shared.schedules.triggers import MIN_INTERVAL_SECONDS

RUN_STATUSES = ("running", "completed", "failed", "skipped")


class RetentionSchema(ma.Schema):
    """Applied after each scheduled backup to that collection's backups in that storage (each shard on its
    own for shard schedules). The newest backup, and any backup a pending or running restore names, is
    never deleted."""

    keep_last = fields.Integer(strict=True, allow_none=True, validate=ma.validate.Range(min=1),
                               metadata={"description": "Keep the newest N backups, delete older ones"})
    max_age_days = fields.Float(allow_none=True, validate=ma.validate.Range(min=0, min_inclusive=False),
                                metadata={"description": "Delete backups older than this many days"})


class LastRunSchema(ma.Schema):
    at = fields.String(required=True, metadata={"format": "date-time",
                                                "description": "The run's scheduled time (or when it was run "
                                                               "by hand)"})
    job_ids = fields.List(fields.String(), required=True, metadata={"description": "Jobs the run created"})
    status = fields.String(required=True, validate=ma.validate.OneOf(RUN_STATUSES),
                           metadata={"description": "running while any job is pending or running; failed when "
                                                    "a job failed or was cancelled or a job could not be "
                                                    "created; skipped when the run was missed"})
    error = fields.String(required=True, allow_none=True,
                          metadata={"description": "Why jobs could not be created, or why the run was skipped"})
    skipped = fields.Integer(required=True, metadata={"description": "Missed runs (while no scheduler was up) "
                                                                     "that were not run"})
    manual = fields.Boolean(required=True, metadata={"description": "Started with POST /schedules/{id}/run"})


class ScheduleSchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    cron = fields.String(required=True, allow_none=True,
                         metadata={"description": "5-field crontab expression (cron(8) meaning: 0 and 7 are "
                                                  "Sunday), in the schedule's time zone"})
    interval_seconds = fields.Integer(required=True, allow_none=True)
    timezone = fields.String(required=True)
    collections = fields.List(fields.String(), required=True)
    type = fields.String(required=True, validate=ma.validate.OneOf(SCHEDULE_TYPES))
    storage_id = fields.String(required=True, allow_none=True,
                               metadata={"description": "null: the default backend at the time of each run"})
    retention = fields.Nested(RetentionSchema, required=True, allow_none=True)
    enabled = fields.Boolean(required=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    updated_at = fields.String(required=True, metadata={"format": "date-time"})
    next_run_time = fields.String(required=True, allow_none=True, dump_only=True,
                                  metadata={"format": "date-time", "description": "null while disabled"})
    last_run = fields.Nested(LastRunSchema, required=True, allow_none=True, dump_only=True)


def _collections_field(required: bool) -> fields.List:
    return fields.List(
        fields.String(), required=required, validate=ma.validate.Length(min=1),
        metadata={"description": 'Collection names, or ["*"] for every collection Qdrant has at each run'},
    )


_NAME = ma.validate.Length(min=1, max=200)
_INTERVAL = ma.validate.Range(min=MIN_INTERVAL_SECONDS)


class ScheduleCreateSchema(ma.Schema):
    """A new schedule: exactly one of cron and interval_seconds."""

    name = fields.String(required=True, validate=_NAME)
    cron = fields.String(allow_none=True, load_default=None,
                         metadata={"description": "5-field crontab expression, e.g. '30 2 * * *'"})
    interval_seconds = fields.Integer(strict=True, allow_none=True, load_default=None, validate=_INTERVAL,
                                      metadata={"description": f"Run every N seconds (N >= {MIN_INTERVAL_SECONDS})"})
    timezone = fields.String(load_default="UTC", metadata={"description": "IANA time zone name"})
    collections = _collections_field(required=True)
    type = fields.String(load_default="backup", validate=ma.validate.OneOf(SCHEDULE_TYPES),
                         metadata={"description": "backup, or shard_backup: every shard of each collection as "
                                                  "its own job"})
    storage_id = fields.String(allow_none=True, load_default=None,
                               metadata={"description": "Storage backend; the default one when absent"})
    retention = fields.Nested(RetentionSchema, allow_none=True, load_default=None)
    enabled = fields.Boolean(load_default=True)


class ScheduleUpdateSchema(ma.Schema):
    """A partial update: only the fields given change. Giving cron clears interval_seconds and vice versa."""

    name = fields.String(validate=_NAME)
    cron = fields.String(allow_none=True)
    interval_seconds = fields.Integer(strict=True, allow_none=True, validate=_INTERVAL)
    timezone = fields.String()
    collections = _collections_field(required=False)
    type = fields.String(validate=ma.validate.OneOf(SCHEDULE_TYPES))
    storage_id = fields.String(allow_none=True)
    retention = fields.Nested(RetentionSchema, allow_none=True)
    enabled = fields.Boolean()

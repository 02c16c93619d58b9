"""Schema building blocks used by several resources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from marshmallow import fields

from api.envelope import ScalarResult


class Passthrough(ma.Schema):
    """An output schema that keeps the fields Qdrant sends beyond the documented ones.

    Qdrant adds fields between versions; passing them on (rather than dropping them) keeps our answers
    as informative as Qdrant's, and ``unknown = INCLUDE`` makes the docs say extra fields may appear.
    """

    class Meta:
        unknown = ma.INCLUDE

    @ma.post_dump(pass_original=True)
    def _keep_extra(self, data: dict, original: Any, **kwargs: Any) -> dict:
        if isinstance(original, Mapping):
            for key, value in original.items():
                if key not in data and key not in self.fields:
                    data[key] = value
        return data


class NameListResult(ScalarResult):
    """``result`` is a list of names."""

    @staticmethod
    def result_field() -> fields.Field:
        return fields.List(fields.String(), required=True)


class QuerySchema(ma.Schema):
    """Query parameters: ones an operation does not know are ignored (as Qdrant does), not refused."""

    class Meta:
        unknown = ma.EXCLUDE


class WaitQuerySchema(QuerySchema):
    wait = fields.Boolean(
        load_default=True,
        metadata={"description": "Wait until Qdrant has finished; with false the answer is 202 and "
                                 "result is null"},
    )

"""How a sync run recognises the server refusing a schema change: by the error's code and
detail, which cross Flight intact, never by its English text."""

from __future__ import annotations

from agentdata.errors import InvalidArgument, Unavailable
from agentdata.schema_evolution import INCOMPATIBLE_REASON
from workers.sync.run import _incompatible_schema


def test_a_refused_schema_change_is_known_by_its_detail() -> None:
    detail = {"reason": INCOMPATIBLE_REASON, "column": "QTY", "old_type": "BIGINT"}
    assert _incompatible_schema(InvalidArgument("any words at all", detail=detail))


def test_the_words_alone_mean_nothing() -> None:
    text = "incompatible schema change on shop.evolve.QTY: BIGINT -> VARCHAR (not a widening)"
    assert not _incompatible_schema(InvalidArgument(text))
    assert not _incompatible_schema(Unavailable(text, detail={"reason": INCOMPATIBLE_REASON}))

"""Settings the decoder needs that cannot be read from the records themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from syncd.debezium.limits import DEFAULT_LIMITS, DecodeLimits

DEFAULT_HEARTBEAT_TOPIC_PREFIX: Final = "__debezium-heartbeat"
DEFAULT_TRANSACTION_TOPIC_SUFFIX: Final = ".transaction"


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How to recognise special topics, and what schemaless records do not say.

    `decimal_scales` and `decimal_columns` are keyed `schema.table.column` and only
    matter for records that arrive *without* a schema (`schemas.enable=false`):
    such a record cannot say that a string is a base64 precise decimal, nor its
    scale. `decimal_scales` declares precise decimals and their scale;
    `decimal_columns` declares columns that are decimals whose scale is unknown
    (decoded when they arrive as numbers or decimal strings; a base64 value then
    fails loudly instead of being mistaken for text).
    """

    heartbeat_topic_prefix: str = DEFAULT_HEARTBEAT_TOPIC_PREFIX
    transaction_topic_suffix: str = DEFAULT_TRANSACTION_TOPIC_SUFFIX
    decimal_scales: Mapping[str, int] = field(default_factory=dict)
    decimal_columns: frozenset[str] = frozenset()
    #: `schema.table` -> columns whose change alone makes an update uninteresting: such
    #: an update decodes to a `QuietUpdate` (rows not converted) instead of a ChangeEvent
    quiet_update_columns: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: `schema.table` -> the only columns the caller reads from a new row (an insert or a
    #: snapshot read): such a record decodes to a `ProbedChange` whose after image holds
    #: just these columns (the others are neither converted nor checked)
    probe_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: what one record may ask of the decoder (sizes, depth, decimal digits and scale)
    limits: DecodeLimits = DEFAULT_LIMITS
    # table -> {column: scale or None}; derived once so the hot path does one dict lookup.
    declared_decimals: Mapping[str, Mapping[str, int | None]] = field(
        init=False, repr=False, compare=False
    )
    # topic -> is it a heartbeat or transaction topic (asked once per record)
    _special_topics: dict[str, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_table: dict[str, dict[str, int | None]] = {}
        for name in self.decimal_columns:
            table, column = _split_column(name)
            by_table.setdefault(table, {})[column] = None
        for name, scale in self.decimal_scales.items():
            if isinstance(scale, bool) or not isinstance(scale, int):
                raise ValueError(f"decimal scale of {name!r} must be an integer")
            table, column = _split_column(name)
            by_table.setdefault(table, {})[column] = scale
        object.__setattr__(self, "declared_decimals", MappingProxyType(by_table))
        object.__setattr__(self, "_special_topics", {})

    def is_special_topic(self, topic: str) -> bool:
        """A heartbeat or transaction topic (no change events)."""
        special = self._special_topics.get(topic)
        if special is None:
            special = self.is_heartbeat_topic(topic) or self.is_transaction_topic(topic)
            if len(self._special_topics) >= 1024:
                self._special_topics.clear()
            self._special_topics[topic] = special
        return special

    def is_heartbeat_topic(self, topic: str) -> bool:
        prefix = self.heartbeat_topic_prefix
        return topic == prefix or (topic.startswith(prefix) and topic[len(prefix)] == ".")

    def is_transaction_topic(self, topic: str) -> bool:
        return topic.endswith(self.transaction_topic_suffix)


def _split_column(name: str) -> tuple[str, str]:
    table, dot, column = name.rpartition(".")
    if not dot or "." not in table or not column:
        raise ValueError(f"decimal column {name!r} must be written schema.table.column")
    return table, column

"""Debezium change-event decoding: Kafka records -> the typed records of `syncd.changes`.

Call `decode_record` for raw Kafka bytes (the daemon) or `decode_json` for documents
already parsed (the CLI); `record_to_json` renders any decoded record as plain JSON.
Both decoders raise only `syncd.changes.DecodeError`.
"""

from syncd.debezium.options import DecodeOptions
from syncd.debezium.records import decode_json, decode_record
from syncd.debezium.render import record_to_json, value_to_json

__all__ = ["DecodeOptions", "decode_json", "decode_record", "record_to_json", "value_to_json"]

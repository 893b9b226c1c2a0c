"""Input topics in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id,
then an Avro, JSON Schema or Protobuf payload, its schema in a Schema Registry.

A :class:`WireReader` turns one topic's values into the documents the per-message checks
read (``event_id``, ``ts`` and ``features`` or ``label``) by a :class:`FieldMapping` the user
states once: a named numeric field per bundle feature, or one array field. Each writer
schema is fetched once per id and checked against the mapping; a value it cannot read
becomes a :class:`~streamapp.codec.checks.RejectError` with its reason:

- ``wire_format``: no magic byte 0 or shorter than the 5-byte header
- ``unknown_schema``: the registry does not know the id
- ``decode``: the payload does not decode with its schema
- ``schema_mapping``: that schema version's fields do not map onto the bundle's features

A registry that cannot answer is not bad input: :class:`RegistryUnavailableError` leaves
the codec, and the worker holds its position and retries (:class:`RegistryHold`).

>>> split_header(b"\\x00\\x00\\x00\\x00\\x07rest")
(7, b'rest')
>>> split_header(b"{}")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamapp.codec.checks.RejectError: not the Confluent wire format: 2 bytes, first 0x7b (...)
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streamapp.codec.avro_flat import flat_reader
from streamapp.codec.checks import NUMBER_TYPES, RejectError, is_event_id
from streamapp.codec.dead_letters import one_line
from streamapp.codec.protobuf_wire import message_reader, proto_messages
from streamapp.errors import ConfigError, StreamappError
from streamapp.events import Reason
from streamapp.settings import WireFormat

__all__ = [
    "FieldMapping",
    "RegistryHold",
    "RegistryUnavailableError",
    "Role",
    "WireReader",
    "record_fields",
    "split_header",
]

logger = logging.getLogger(__name__)

Role = Literal["features", "feedback"]

# a field's kind, as the mapping needs it: "number", "array" (of numbers), "string",
# "label" (an enum), "timestamp" (a logical type), "other"; nullable when null is allowed
FieldKind = tuple[str, bool]

_NUMBERS = {"int", "long", "float", "double"}
# read as UTC datetimes (a local-timestamp-* would be read in the host's time zone: "other")
_TIMESTAMPS = {"timestamp-millis", "timestamp-micros", "timestamp-nanos"}
_SCHEMA_TYPES = {"avro": "AVRO", "json-schema": "JSON", "protobuf": "PROTOBUF"}


class RegistryUnavailableError(StreamappError):
    """The schema registry could not answer (down, overloaded, refusing our credentials):
    the input is not at fault, so nothing is dead-lettered; the worker holds and retries."""


def split_header(value: bytes | None) -> tuple[int, bytes]:
    """``(schema id, payload)`` of a value in the Confluent wire format, else ``wire_format``."""
    if value is None:
        raise RejectError(Reason.DECODE, "empty message (tombstone)")
    if len(value) < 5 or value[0] != 0:
        first = f"0x{value[0]:02x}" if value else "none"
        raise RejectError(
            Reason.WIRE_FORMAT,
            f"not the Confluent wire format: {len(value)} bytes, first {first} "
            "(expected magic byte 0x00 and a 4-byte schema id)",
        )
    return int.from_bytes(value[1:5], "big"), value[5:]


@dataclass(frozen=True)
class FieldMapping:
    """Which record field holds what: ``event_id``, ``ts`` (optional in the record), the
    ``label`` (feedback), and the features, either one field per bundle feature
    (``features``, in the bundle's order) or one ``array`` field. ``numeric_label``: the
    label is a regression bundle's target, so its field must hold a number."""

    event_id: str = "event_id"
    ts: str = "ts"
    label: str = "label"
    features: tuple[str, ...] = ()
    array: str | None = None
    numeric_label: bool = False

    @classmethod
    def of(
        cls,
        feature_names: Sequence[str],
        *,
        event_id: str = "event_id",
        ts: str = "ts",
        label: str = "label",
        array: str | None = None,
        renamed: Mapping[str, str] | None = None,
        numeric_label: bool = False,
    ) -> FieldMapping:
        """The mapping for a bundle's ``feature_names``; ``renamed`` maps a feature name to
        its record field where the two differ; ``numeric_label`` for a regression bundle."""
        renamed = renamed or {}
        unknown = sorted(set(renamed) - set(feature_names))
        if unknown:
            raise ConfigError(f"schema_registry.feature_fields names no bundle feature: {unknown}")
        fields = () if array else tuple(renamed.get(n, n) for n in feature_names)
        return cls(event_id, ts, label, fields, array, numeric_label)

    def problems(self, fields: Mapping[str, FieldKind], role: Role) -> list[str]:
        """Why a schema with ``fields`` does not map (empty when it does).

        >>> m = FieldMapping.of(["a", "b"])
        >>> m.problems({"event_id": ("string", False), "a": ("number", False)}, "features")
        ["feature fields missing: 'b'"]
        >>> m.problems({"event_id": ("string", False), "a": ("number", True),
        ...             "b": ("string", False)}, "features")
        ["feature field 'b' is string, not a number"]
        """
        out = []
        kind = fields.get(self.event_id)
        if kind is None:
            out.append(f"event_id field {self.event_id!r} is missing")
        elif kind[0] != "string":
            out.append(f"event_id field {self.event_id!r} is {kind[0]}, not a string")
        ts = fields.get(self.ts)
        if ts is not None and ts[0] not in ("number", "timestamp"):
            out.append(f"ts field {self.ts!r} is {ts[0]}, not a number or timestamp")
        if role == "feedback":
            label = fields.get(self.label)
            if label is None:
                out.append(f"label field {self.label!r} is missing")
            elif self.numeric_label and label[0] != "number":
                out.append(f"label field {self.label!r} is {label[0]}, not a number (a target)")
            elif label[0] not in ("string", "number", "label"):
                out.append(f"label field {self.label!r} is {label[0]}")
            return out
        if self.array is not None:
            array = fields.get(self.array)
            if array is None:
                out.append(f"features array field {self.array!r} is missing")
            elif array[0] != "array":
                out.append(f"features field {self.array!r} is {array[0]}, not an array of numbers")
            return out
        missing = [name for name in self.features if name not in fields]
        if missing:
            more = f" (+{len(missing) - 5})" if len(missing) > 5 else ""
            out.append(f"feature fields missing: {', '.join(map(repr, missing[:5]))}{more}")
        for name in self.features:
            field = fields.get(name)
            if field is not None and field[0] != "number":
                out.append(f"feature field {name!r} is {field[0]}, not a number")
        return out

    def document(self, record: Any, role: Role) -> dict[str, Any]:
        """The per-message checks' document for a decoded ``record``: ``event_id``, ``ts``
        when the record has one, ``features`` (a list in the bundle's order, ``None`` where
        a value is absent) or ``label``.

        >>> FieldMapping.of(["a", "b"]).document({"event_id": "e", "a": 1.0, "b": None}, "features")
        {'event_id': 'e', 'features': [1.0, None]}
        """
        if not isinstance(record, dict):
            raise RejectError(Reason.SCHEMA, f"not a record: {type(record).__name__}")
        event_id = record.get(self.event_id)
        if not is_event_id(event_id):
            raise RejectError(
                Reason.SCHEMA, f"{self.event_id} {one_line(repr(event_id), 60)} is not 1-256 chars"
            )
        doc: dict[str, Any] = {"event_id": event_id}
        ts = record.get(self.ts)
        if ts is not None:
            doc["ts"] = ts.timestamp() if isinstance(ts, datetime.datetime) else ts
        if role == "feedback":
            doc["label"] = record.get(self.label)
            return doc
        if self.array is not None:
            values = record.get(self.array)
            if not isinstance(values, list):
                raise RejectError(Reason.SCHEMA, f"{self.array} is not an array")
            doc["features"] = values
        else:
            get = record.get
            doc["features"] = [get(name) for name in self.features]
        features = doc["features"]
        if not set(map(type, features)) <= _VALUE_TYPES:
            bad = next(v for v in features if type(v) not in _VALUE_TYPES)
            raise RejectError(Reason.SCHEMA, f"a feature is {type(bad).__name__}, not a number")
        return doc

    def raw_run(self, names: Sequence[str]) -> tuple[int, int] | None:
        """``(first, count)`` when the named feature fields are side by side in ``names``,
        in the bundle's order: a flat reader hands them over as one run of bytes.

        >>> FieldMapping.of(["a", "b"]).raw_run(["event_id", "a", "b", "ts"])
        (1, 2)
        >>> FieldMapping.of(["a", "b"]).raw_run(["b", "a"]) is None
        True
        """
        if self.array is not None or not self.features or self.features[0] not in names:
            return None
        first = list(names).index(self.features[0])
        if tuple(names[first : first + len(self.features)]) != self.features:
            return None
        return first, len(self.features)

    def positional(
        self, names: Sequence[str], role: Role, *, raw: bool = False
    ) -> Callable[[list[Any]], dict[str, Any]]:
        """:meth:`document` for records read as value lists in the order of ``names`` (a
        schema the mapping was checked against: its feature fields hold numbers or null).

        >>> place = FieldMapping.of(["a", "b"]).positional(["b", "event_id", "a", "ts"],
        ...                                                "features")
        >>> place([2.0, "e", 1.0, None])
        {'event_id': 'e', 'features': [1.0, 2.0]}
        """
        at = {name: i for i, name in enumerate(names)}
        event_id, ts = at[self.event_id], at.get(self.ts)
        if role == "feedback":
            label = at[self.label]

            def feedback(values: list[Any]) -> dict[str, Any]:
                doc = {"event_id": _event_id(values[event_id], self.event_id)}
                doc["label"] = values[label]
                if ts is not None and values[ts] is not None:
                    doc["ts"] = values[ts]
                return doc

            return feedback
        if raw:  # the features as one bytes value (flat_reader's raw run)
            array = at["\0features"]

            def pick(values: list[Any]) -> Any:
                return values[array]

        elif self.array is not None:
            array = at[self.array]

            def pick(values: list[Any]) -> Any:
                return list(values[array])

        else:
            index = [at[name] for name in self.features]
            start = index[0]
            if index == list(range(start, start + len(index))):  # in order, side by side

                def pick(values: list[Any]) -> Any:
                    return values[start : start + len(index)]

            else:
                getter = operator.itemgetter(*index, *index[:1])  # always a tuple

                def pick(values: list[Any]) -> Any:
                    return list(getter(values))[:-1]

        def features(values: list[Any]) -> dict[str, Any]:
            doc = {"event_id": _event_id(values[event_id], self.event_id), "features": pick(values)}
            if ts is not None and values[ts] is not None:
                doc["ts"] = values[ts]
            return doc

        return features


def _event_id(value: Any, field: str) -> str:
    if not is_event_id(value):
        raise RejectError(Reason.SCHEMA, f"{field} {one_line(repr(value), 60)} is not 1-256 chars")
    return value


_VALUE_TYPES = NUMBER_TYPES | {type(None)}


def record_fields(schema_type: str, schema_str: str) -> dict[str, FieldKind]:
    """The top-level fields of a registered schema, each with its kind (see :data:`FieldKind`).

    >>> record_fields("AVRO", json.dumps({"type": "record", "name": "E", "fields": [
    ...     {"name": "x", "type": ["null", "double"]}, {"name": "v", "type": {"type": "array",
    ...     "items": "float"}}, {"name": "t", "type": {"type": "long",
    ...     "logicalType": "timestamp-millis"}}]}))
    {'x': ('number', True), 'v': ('array', False), 't': ('timestamp', False)}
    >>> record_fields("JSON", json.dumps({"type": "object", "properties": {
    ...     "x": {"type": ["number", "null"]}, "id": {"type": "string"}}}))
    {'x': ('number', True), 'id': ('string', False)}
    """
    if schema_type == "PROTOBUF":
        try:
            return proto_messages(schema_str)[0]
        except ValueError:
            return {}  # every field is missing: the mapping says so
    schema = json.loads(schema_str)
    if schema_type == "JSON":
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        return {name: _json_kind(spec) for name, spec in props.items()}
    if not isinstance(schema, dict) or schema.get("type") != "record":
        return {}
    return {f["name"]: _avro_kind(f["type"]) for f in schema.get("fields", [])}


def _avro_kind(t: Any) -> FieldKind:
    if isinstance(t, list):
        kinds = {_avro_kind(b)[0] for b in t if b != "null"}
        if len(kinds) == 1:
            return kinds.pop(), "null" in t
        # a string or a number: a class, as feedback may carry one
        return ("label" if kinds == {"string", "number"} else "other"), "null" in t
    if isinstance(t, dict):
        logical = t.get("logicalType")
        if logical in _TIMESTAMPS:
            return "timestamp", False
        if logical is not None:  # date, time-*, decimal, uuid, local-timestamp-*: fastavro
            return "other", False  # reads them as objects the checks do not take
        if t.get("type") == "array":
            return ("array" if _avro_kind(t.get("items"))[0] == "number" else "other"), False
        if t.get("type") == "enum":
            return "label", False
        return _avro_kind(t.get("type"))
    if t in _NUMBERS:
        return "number", False
    return ("string" if t == "string" else "other"), False


def _json_kind(spec: Any) -> FieldKind:
    branches = spec.get("oneOf") or spec.get("anyOf") if isinstance(spec, dict) else None
    if branches:  # e.g. streamapp's own feature event: a list, or an object by name
        kinds = [_json_kind(b) for b in branches]
        return ("array" if any(k == "array" for k, _ in kinds) else "other"), False
    types = spec.get("type") if isinstance(spec, dict) else None
    types = [types] if isinstance(types, str) else list(types or [])
    nullable = "null" in types
    types = [t for t in types if t != "null"]
    if len(types) == 1 and types[0] in ("number", "integer"):
        return "number", nullable
    if len(types) == 1 and types[0] == "string":
        return "string", nullable
    if types == ["array"] and _json_kind(spec.get("items", {}))[0] == "number":
        return "array", nullable
    if (isinstance(spec, dict) and "enum" in spec) or (
        len(types) > 1 and set(types) <= {"string", "integer", "number"}
    ):
        return "label", nullable
    return "other", nullable


@dataclass(frozen=True)
class _Writer:
    """One registered schema as this reader uses it: how to read a payload into the checks'
    document (raising :class:`RejectError` for a record that is not one, anything else for
    a payload that does not decode), or why it cannot map."""

    read: Callable[[bytes], dict[str, Any]] | None
    unmappable: str | None = None


class WireReader:
    """Reads one topic's values in the Confluent wire format into the per-message checks'
    documents. Writer schemas are fetched once per id (``client.get_schema``) and kept."""

    def __init__(
        self,
        client: Any,
        fmt: WireFormat,
        mapping: FieldMapping,
        role: Role,
        *,
        max_payload_bytes: int = 262_144,
        unknown_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fmt not in _SCHEMA_TYPES:
            raise ConfigError(
                f"input format {fmt!r} is not a registry format {list(_SCHEMA_TYPES)}"
            )
        self.client = client
        self.format = fmt
        self.mapping = mapping
        self.role: Role = role
        self.max_payload_bytes = max_payload_bytes
        self._writers: dict[int, _Writer] = {}
        # ids the registry refused (not found, a fixed 4xx), for unknown_ttl_s: garbage that
        # repeats an id costs one lookup per ttl, not one per message (a producer may
        # register the id later, so it is not kept for good); at most _MAX_UNKNOWN of them
        self._unknown: dict[int, tuple[float, str]] = {}
        self.unknown_ttl_s = unknown_ttl_s
        self._clock = clock

    def check_latest(self, topic: str) -> str | None:
        """Check the mapping against the latest schema registered for ``topic`` (subject
        ``<topic>-value``): one line and :class:`~streamapp.errors.ConfigError` when it does
        not map. Returns the subject's latest version as a line for the log, or ``None``
        when nothing is registered yet (each new schema id is checked as it arrives)."""
        subject = f"{topic}-value"
        try:
            latest = self.client.get_latest_version(subject)
        except Exception as exc:
            refused = _refused(exc, _NO_SUBJECT)
            if refused == "not found":
                return None
            if refused is not None:
                raise ConfigError(
                    f"schema registry: the latest version of {subject}: {refused}"
                ) from None
            raise RegistryUnavailableError(f"schema registry: {_describe(exc)}") from None
        unmappable = self._evaluate(latest.schema).unmappable
        if unmappable is not None:
            raise ConfigError(
                f"subject {subject} version {latest.version} (id {latest.schema_id})"
                f"{unmappable} (see schema_registry.* settings)"
            )
        return f"{subject} v{latest.version} (id {latest.schema_id})"

    def read(self, values: Iterable[bytes | None]) -> list[dict[str, Any] | RejectError]:
        """Each value's document, or why it is rejected; :class:`RegistryUnavailableError`
        when a schema id is new and the registry cannot answer."""
        out: list[dict[str, Any] | RejectError] = []
        writers = self._writers
        for value in values:
            try:
                if value is not None and len(value) > self.max_payload_bytes:
                    raise RejectError(
                        Reason.OVERSIZED,
                        f"{len(value)} bytes exceeds max_payload_bytes={self.max_payload_bytes}",
                    )
                schema_id, payload = split_header(value)
                writer = writers.get(schema_id) or self._writer(schema_id)
                if writer.read is None:
                    raise RejectError(Reason.SCHEMA_MAPPING, writer.unmappable or "")
                try:
                    out.append(writer.read(payload))
                except RejectError:
                    raise
                except Exception as exc:
                    raise RejectError(
                        Reason.DECODE,
                        f"{self.format} payload does not decode with schema id {schema_id}: "
                        f"{type(exc).__name__}: {exc}",
                    ) from None
            except RejectError as reject:
                out.append(reject)
        return out

    def _reader(self, schema_type: str, schema_str: str) -> Callable[[bytes], dict[str, Any]]:
        """Payload -> document for one writer schema: a flat Avro record through
        :func:`~streamapp.codec.avro_flat.flat_reader` and positions fixed once, anything
        else through orjson or fastavro and :meth:`FieldMapping.document`."""
        document, role = self.mapping.document, self.role
        if schema_type == "JSON":
            loads = orjson.loads
            return lambda payload: document(loads(payload), role)
        if schema_type == "PROTOBUF":
            message = message_reader(schema_str, lambda fields: self.mapping.problems(fields, role))
            return lambda payload: document(message(payload), role)
        schema = json.loads(schema_str)
        names = [field["name"] for field in schema.get("fields", [])]
        raw = self.mapping.raw_run(names) if role == "features" else None
        flat = flat_reader(schema, raw)
        if flat is None and raw is not None:  # the features are not all plain doubles
            raw, flat = None, flat_reader(schema)
        if flat is not None:
            if raw is not None:  # the features are one value, their bytes
                first, count = raw
                names = [*names[:first], "\0features", *names[first + count :]]
            place = self.mapping.positional(names, role, raw=raw is not None)
            return lambda payload: place(flat(payload))
        import fastavro  # the registry extra: only a worker that reads Avro needs it

        parsed = fastavro.parse_schema(schema)
        reader = fastavro.schemaless_reader
        return lambda payload: document(reader(io.BytesIO(payload), parsed, None), role)

    def _problems(self, schema_type: str, schema_str: str) -> list[str]:
        """Why the mapping does not fit the schema; a Protobuf file fits when one of its
        messages does (each record names its message, checked as it first arrives)."""
        if schema_type == "PROTOBUF":
            try:
                messages = proto_messages(schema_str)
            except ValueError as exc:
                return [str(exc)]
            found = [self.mapping.problems(fields, self.role) for fields in messages]
            return min(found, key=len)
        return self.mapping.problems(record_fields(schema_type, schema_str), self.role)

    def _evaluate(self, schema: Any) -> _Writer:
        """How to read records of ``schema`` (a registered ``Schema``), or why not (the
        reason starts with ``:`` or `` is``/`` cannot``, after the schema's name). A schema
        this reader cannot even parse (a schema reference, a ``.proto`` importing another
        file, a malformed ``schema_str``) does not map: its records become dead letters."""
        schema_type = schema.schema_type or "AVRO"
        expected = _SCHEMA_TYPES[self.format]
        if schema_type != expected:
            return _Writer(None, f" is {schema_type}, not {expected}")
        if getattr(schema, "references", None):
            names = ", ".join(str(getattr(r, "name", r)) for r in schema.references)
            return _Writer(None, f" uses schema references ({one_line(names, 80)}): not supported")
        try:
            problems = self._problems(schema_type, schema.schema_str)
            if problems:
                return _Writer(None, f" does not map onto the bundle: {'; '.join(problems)}")
            return _Writer(self._reader(schema_type, schema.schema_str))
        except Exception as exc:  # anything the parsers raise: the schema's fault, not ours
            return _Writer(None, f" cannot be read: {_describe(exc)}")

    def _writer(self, schema_id: int) -> _Writer:
        """The writer schema ``schema_id``, fetched (an id the registry refuses is rejected
        and remembered for ``unknown_ttl_s`` only: a producer may register it later)."""
        now = self._clock()
        known = self._unknown.get(schema_id)
        if known is not None and known[0] > now:
            raise RejectError(Reason.UNKNOWN_SCHEMA, known[1])
        try:
            schema = self.client.get_schema(schema_id)
        except Exception as exc:
            refused = _refused(exc, _NO_SCHEMA)
            if refused is None:
                raise RegistryUnavailableError(f"schema registry: {_describe(exc)}") from None
            why = (
                f"schema id {schema_id} is not in the registry"
                if refused == "not found"
                else f"schema id {schema_id}: {refused}"
            )
            if len(self._unknown) >= _MAX_UNKNOWN:  # drop the expired, else the oldest
                self._unknown = {k: v for k, v in self._unknown.items() if v[0] > now}
                while len(self._unknown) >= _MAX_UNKNOWN:
                    del self._unknown[next(iter(self._unknown))]
            self._unknown.pop(schema_id, None)
            self._unknown[schema_id] = (now + self.unknown_ttl_s, why)
            raise RejectError(Reason.UNKNOWN_SCHEMA, why) from None
        self._unknown.pop(schema_id, None)
        schema_type = schema.schema_type or "AVRO"
        writer = self._evaluate(schema)
        if writer.unmappable is not None:
            writer = _Writer(None, f"schema id {schema_id}{writer.unmappable}")
        logger.info(
            "schema id %d (%s) %s", schema_id, schema_type, writer.unmappable or "maps: reading it"
        )
        self._writers[schema_id] = writer
        return writer


def _status(exc: Exception) -> int | None:
    """The HTTP status of a registry error (``None``: no answer at all)."""
    status = getattr(exc, "http_status_code", None)
    return status if isinstance(status, int) and status > 0 else None


# the registry's own "not found" error codes (Confluent: 40401 subject, 40403 schema;
# Apicurio's ccompat API answers 40402 for the latest version of an unknown subject). A 404
# without one of these comes from something else (a proxy, a wrong url path): an outage.
_NO_SCHEMA = frozenset({40403})
_NO_SUBJECT = frozenset({40401, 40402})
# 4xx answers that may pass: credentials, timeouts, rate limits (an outage, held)
_TRANSIENT_4XX = frozenset({401, 403, 404, 408, 429})
_MAX_UNKNOWN = 4096  # refused ids remembered at once


def _refused(exc: Exception, not_found: frozenset[int]) -> str | None:
    """Why the registry's answer to a lookup will not change on a retry: ``"not found"``
    (its own not-found code), another line (a fixed 4xx answer, or an answer that is not
    the registry's JSON), or ``None``: an outage, hold and retry.

    >>> from confluent_kafka.schema_registry.error import SchemaRegistryError as E
    >>> _refused(E(404, 40403, "no schema"), _NO_SCHEMA)
    'not found'
    >>> _refused(E(404, 404, "RESTEASY003210: no resource"), _NO_SCHEMA) is None
    True
    >>> _refused(E(422, 42202, "bad id"), _NO_SCHEMA)[:60]
    'the registry refused the lookup: SchemaRegistryError: bad id'
    >>> _refused(E(503, 50003, "down"), _NO_SCHEMA) is None
    True
    """
    status = _status(exc)
    if status is not None:
        if status == 404 and getattr(exc, "error_code", None) in not_found:
            return "not found"
        if 400 <= status < 500 and status not in _TRANSIENT_4XX:
            return f"the registry refused the lookup: {_describe(exc)}"
        return None
    if isinstance(exc, (ValueError, KeyError, TypeError)):  # a 2xx that is not its JSON
        return f"the registry's answer cannot be read: {_describe(exc)}"
    return None


def _describe(exc: Exception) -> str:
    """One line for a registry failure: its type and message, never the client's config
    (credentials stay in the client, not in what is logged)."""
    return one_line(f"{type(exc).__name__}: {exc}", 200)


class RegistryHold:
    """Rides out a registry outage: the batch that needed the registry is handed back to
    the consumer (``unread``: its position held, nothing dead-lettered, nothing published)
    and tried again after a backoff (0.2 s doubling to 5 s); one log line when the outage
    begins and one when it ends; past ``limit_s`` the worker stops with one line.

    >>> now = [0.0]; unread = []
    >>> hold = RegistryHold(60.0, clock=lambda: now[0], sleep=lambda s: None)
    >>> hold.held(["m1", "m2"], unread.extend, RegistryUnavailableError("down"))
    >>> hold.down, hold.outages, unread
    (True, 1, ['m1', 'm2'])
    >>> now[0] = 3.0; hold.resumed(); hold.down, hold.down_s, hold.down_total_s
    (False, 0.0, 3.0)
    """

    def __init__(
        self,
        limit_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self._sleep = sleep
        self._since: float | None = None
        self._backoff = 0.2
        self.outages = 0  # for the metrics: how many began
        self.holds = 0  # how many batches were handed back
        self.down_total_s = 0.0  # seconds without a registry, outages that ended

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def down_s(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def held(
        self,
        messages: Sequence[Any],
        unread: Callable[[Sequence[Any]], None],
        exc: RegistryUnavailableError,
    ) -> None:
        """``messages`` could not be decoded for want of the registry: hand them back with
        ``unread`` and wait before the next try."""
        now = self._clock()
        if self._since is None:
            self._since = now
            self._backoff = 0.2
            self.outages += 1
            logger.warning("schema registry unreachable (%s): holding position, retrying", exc)
        elif now - self._since > self.limit_s:
            raise RegistryUnavailableError(
                f"the schema registry has been unreachable for {now - self._since:.0f} s "
                f"(schema_registry.outage_limit_s={self.limit_s:g}): {exc}"
            )
        self.holds += 1
        unread(messages)
        self._sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 5.0)

    def resumed(self) -> None:
        """A batch decoded: an outage, if any, is over."""
        if self._since is not None:
            down = self.down_s
            self.down_total_s += down
            logger.warning("schema registry reachable again after %.1f s", down)
            self._since = None

"""Protobuf in the Confluent wire format: after the schema id, the message indexes (which
message of the schema's file), then the message.

The schema comes as the registry keeps it when a confluent-kafka producer registered it: a
base64 ``FileDescriptorProto`` (confluent-kafka's ``ProtobufSerializer`` writes that form).
A schema kept as ``.proto`` text needs a compiler, which a worker does not carry: such a
version does not map (its records are dead letters with the reason) and says why.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

__all__ = ["describe", "message_reader", "proto_messages", "twin_classes"]

# FieldDescriptorProto types: the numbers, string, enum
_NUMBERS = {1, 2, 3, 4, 5, 6, 7, 13, 15, 16, 17, 18}
_STRING, _ENUM, _REPEATED = 9, 14, 3


def describe(schema_str: str) -> Any:
    """The ``FileDescriptorProto`` of a registered schema; ``ValueError`` for ``.proto`` text."""
    from google.protobuf import descriptor_pb2

    try:
        raw = base64.b64decode(schema_str, validate=True)
        file = descriptor_pb2.FileDescriptorProto()
        file.ParseFromString(raw)
    except Exception as exc:  # binascii.Error, DecodeError: not a compiled descriptor
        raise ValueError(
            "a .proto text schema (register it with confluent-kafka's ProtobufSerializer, "
            f"which keeps the compiled descriptor): {type(exc).__name__}"
        ) from None
    if not file.message_type:
        raise ValueError("the schema's file holds no message")
    return file


def proto_messages(schema_str: str) -> list[dict[str, tuple[str, bool]]]:
    """Each top-level message's fields with their kinds, as the mapping reads them."""
    return [_fields(message) for message in describe(schema_str).message_type]


def _fields(message: Any) -> dict[str, tuple[str, bool]]:
    """One ``DescriptorProto``'s fields with their kinds (see ``registry.FieldKind``)."""
    fields: dict[str, tuple[str, bool]] = {}
    for field in message.field:
        if field.label == _REPEATED:
            kind = "array" if field.type in _NUMBERS else "other"
        elif field.type in _NUMBERS:
            kind = "number"
        elif field.type == _STRING:
            kind = "string"
        elif field.type == _ENUM:
            kind = "label"
        else:
            kind = "other"
        fields[field.name] = (kind, field.proto3_optional)
    return fields


# a message index is a zig-zag varint of at most 10 bytes (64 bits), as Avro's long: a run of
# continuation bytes past that is garbage, refused at once rather than shifted on and on
_MAX_VARINT_BYTES = 10


def _indexes(buf: bytes) -> tuple[list[int], int]:
    """The message-index array at the start of ``buf`` (zig-zag varints; a lone 0 is [0]).

    >>> _indexes(b"\\x00rest"), _indexes(b"\\x04\\x02\\x06")
    (([0], 1), ([1, 3], 3))
    >>> _indexes(b"\\xff" * 11)
    Traceback (most recent call last):
    ...
    ValueError: a message index varint longer than 10 bytes
    """
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = n = 0
        for _ in range(_MAX_VARINT_BYTES):
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return (n >> 1) ^ -(n & 1)
        raise ValueError(f"a message index varint longer than {_MAX_VARINT_BYTES} bytes")

    count = varint()
    if count == 0:
        return [0], pos
    if not 0 < count <= 16:
        raise ValueError(f"message index count {count}")
    values = [varint() for _ in range(count)]
    return values, pos


def message_reader(
    schema_str: str, problems: Callable[[dict[str, tuple[str, bool]]], list[str]] | None = None
) -> Callable[[bytes], dict[str, Any]]:
    """payload -> the message's top-level fields by name (repeated ones as lists, an unset
    proto3 ``optional`` as ``None``, enums by name).

    Each record names its message by the indexes before it: an index that names no message
    (negative, or past the last) does not decode. ``problems`` (the mapping's check) runs
    once per message the records name: a record of a message that does not map is a
    ``schema_mapping`` :class:`~streamapp.codec.checks.RejectError`, whichever message of
    the file maps."""
    from google.protobuf import descriptor_pool, message_factory

    from streamapp.codec.checks import RejectError
    from streamapp.events import Reason

    file = describe(schema_str)
    pool = descriptor_pool.DescriptorPool()
    descriptor = pool.Add(file)
    classes: dict[tuple[int, ...], Any] = {}
    unmapped: dict[tuple[int, ...], str] = {}

    def message_class(path: list[int]) -> Any:
        key = tuple(path)
        cls = classes.get(key)
        if cls is not None:
            return cls
        if key in unmapped:
            raise RejectError(Reason.SCHEMA_MAPPING, unmapped[key])
        protos = file.message_type
        proto: Any = None
        desc: Any = None
        for depth, i in enumerate(path):
            if not 0 <= i < len(protos):
                raise ValueError(f"message index {list(path)} names no message of the schema")
            proto = protos[i]
            desc = (
                descriptor.message_types_by_name[proto.name]
                if depth == 0
                else desc.nested_types_by_name[proto.name]
            )
            protos = proto.nested_type
        if problems is not None:
            found = problems(_fields(proto))
            if found:
                unmapped[key] = f"message {desc.full_name} does not map: {'; '.join(found)}"
                raise RejectError(Reason.SCHEMA_MAPPING, unmapped[key])
        cls = classes[key] = message_factory.GetMessageClass(desc)
        return cls

    def read(payload: bytes) -> dict[str, Any]:
        path, pos = _indexes(payload)
        cls = message_class(path)
        message = cls()
        message.ParseFromString(payload[pos:])
        out: dict[str, Any] = {}
        for field in cls.DESCRIPTOR.fields:
            value = getattr(message, field.name)
            if field.is_repeated:
                value = list(value)
            elif field.has_presence and field.containing_oneof is not None:
                value = value if message.HasField(field.name) else None
            elif field.type == _ENUM:
                value = field.enum_type.values_by_number[value].name
            out[field.name] = value
        return out

    return read


def twin_classes(task: str = "classification") -> dict[str, Any]:
    """Message classes for the twins of the input schemas, as ``streamapp produce --format
    protobuf`` writes them: ``FeatureEvent`` (event_id, optional ts, repeated features) and
    ``Feedback`` (event_id, label as a string, optional ts), or for ``task="regression"``
    ``RegressionFeedback`` (its label the target, a double)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    files = []
    string, double, optional, repeated = 9, 1, 1, 3

    def message(name: str, fields: list[tuple[str, int, int, bool]]) -> None:
        # a file each: a subject's schema then holds the one message its topic carries
        file = descriptor_pb2.FileDescriptorProto(
            name=f"streamapp/{name.lower()}.proto", package="streamapp", syntax="proto3"
        )
        files.append(file)
        proto = file.message_type.add(name=name)
        for number, (field, kind, label, has_presence) in enumerate(fields, start=1):
            spec = proto.field.add(name=field, number=number, type=kind, label=label)
            if has_presence:  # proto3 ``optional``: a synthetic oneof, as protoc writes it
                spec.proto3_optional = True
                spec.oneof_index = len(proto.oneof_decl)
                proto.oneof_decl.add(name=f"_{field}")

    message(
        "FeatureEvent",
        [
            ("event_id", string, optional, False),
            ("ts", double, optional, True),
            ("features", double, repeated, False),
        ],
    )
    feedback = "RegressionFeedback" if task == "regression" else "Feedback"
    message(
        feedback,
        [
            ("event_id", string, optional, False),
            # a target has presence: in proto3 an absent plain double reads as 0.0, a target
            # that was never sent; an absent optional one is a missing label (``schema``)
            ("label", double if task == "regression" else string, optional, task == "regression"),
            ("ts", double, optional, True),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    return {
        kind: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"streamapp.{name}"))
        for kind, name in (("features", "FeatureEvent"), ("feedback", feedback))
    }

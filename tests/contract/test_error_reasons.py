"""`flou.v1.ErrorReason`, the Python error tree and the status table say the same thing."""

from __future__ import annotations

import inspect
import re
import typing

import grpc
import pytest

from flou_grpc import errors
from flou_grpc._proto.flou.v1 import error_reason_pb2
from flou_grpc.service import status

PROTO_REASONS = {v.name for v in error_reason_pb2.ErrorReason.DESCRIPTOR.values if v.number != 0}


def _concrete(cls: type[errors.FlouError]) -> list[type[errors.FlouError]]:
    found = [cls] if cls.reason else []
    for sub in cls.__subclasses__():
        found += _concrete(sub)
    return found


CONCRETE = _concrete(errors.FlouError)


def _sample(cls: type[errors.FlouError]) -> errors.FlouError:
    """An instance of `cls` with made-up arguments of the declared types."""
    samples = {
        "str": "x",
        "int": 7,
        "bool": True,
        "Sequence[str]": ["a.b", "a.c"],
        "Sequence[FieldViolation]": [errors.FieldViolation("params[0].id", "bad")],
    }
    hints = typing.get_type_hints(cls.__init__, vars(errors))
    kwargs = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name != "self":
            annotation = hints[name]
            key = (
                getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
            )
            key = key or str(annotation).replace("collections.abc.", "").replace(
                "flou_grpc.errors.", ""
            )
            kwargs[name] = samples[key]
    return cls(**kwargs)


def _documented(compiled_protos) -> dict[str, tuple[str, set[str]]]:
    """ErrorReason value name -> (status code, metadata keys), read from its comment."""
    file = compiled_protos["flou/v1/error_reason.proto"]
    (enum_index,) = [i for i, e in enumerate(file.enum_type) if e.name == "ErrorReason"]
    enum = file.enum_type[enum_index]
    comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
    documented = {}
    for i, value in enumerate(enum.value):
        if value.number == 0:
            continue
        comment = comments[(5, enum_index, 2, i)]
        code = re.match(r"\s*([A-Z_]+)\.", comment)
        assert code, f"{value.name}: the comment must start with its status code"
        metadata = comment.split("Metadata:", 1)
        assert len(metadata) == 2, f"{value.name}: the comment must list its metadata"
        keys = set(re.findall(r"`([a-z][a-zA-Z0-9]*)`", metadata[1]))
        documented[value.name] = (code.group(1), keys)
    return documented


def test_every_proto_reason_has_exactly_one_python_error():
    reasons = [cls.reason for cls in CONCRETE]
    assert len(reasons) == len(set(reasons))
    assert set(reasons) == PROTO_REASONS


def test_category_classes_carry_no_reason():
    for category in status.CODES:
        if category.__subclasses__():
            assert category.reason == "", category


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda c: c.__name__)
def test_status_code_and_metadata_are_the_documented_ones(cls, compiled_protos):
    code, keys = _documented(compiled_protos)[cls.reason]
    assert status.status_code(cls) is getattr(grpc.StatusCode, code)
    error = _sample(cls)
    assert set(error.metadata) <= keys, "metadata keys missing from error_reason.proto"
    # A value documents only the keys its error can carry ("when accepted" included).
    assert keys <= set(error.metadata) | {"description"}
    assert all(re.fullmatch(r"[a-z][a-zA-Z0-9-_]+", key) for key in error.metadata)


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda c: c.__name__)
def test_message_repeats_every_dynamic_part_of_the_metadata(cls):
    error = _sample(cls)
    for key, value in error.metadata.items():
        if key not in {"accepted"}:
            assert value in error.message, (key, value, error.message)


@pytest.mark.parametrize("cls", CONCRETE, ids=lambda c: c.__name__)
def test_an_error_rebuilt_from_its_error_info_is_the_same_error(cls):
    error = _sample(cls)
    restored = errors.FlouError.from_info(**error.to_info())
    assert type(restored) is cls
    assert (restored.message, restored.metadata) == (error.message, error.metadata)
    for key in error.metadata:
        attribute = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        if hasattr(error, attribute):
            assert getattr(restored, attribute) == getattr(error, attribute), attribute

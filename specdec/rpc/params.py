"""GenerationParams <-> the GenerateRequest proto (everything but the prompt). Torch-free:
the SDK builds requests with it, the coordinator reads them with it."""

from __future__ import annotations

from specdec.core.constraint import ConstraintKind, OutputConstraint
from specdec.core.names import TREE_KWARGS
from specdec.core.params import GenerationParams
from specdec.pb.v1 import common_pb2
from specdec.pb.v1 import coordinator_pb2 as pb

# proto fields that are `optional` (unset: the server's default) vs plain scalars
_OPTIONAL = ("max_new_tokens", "temperature", "top_p", "seed", "draft_length", "threshold")
_PLAIN = ("top_k", "ignore_eos", "chat")


def enum_name(enum_type, prefix: str, value: int) -> str | None:
    """'pearl' for MODE_PEARL; None for UNSPECIFIED; ValueError naming the choices otherwise."""
    if value == 0:
        return None
    try:
        return enum_type.Name(value).removeprefix(prefix).lower()
    except ValueError:
        raise ValueError(f"{prefix.rstrip('_').lower()} must be one of {', '.join(choices(enum_type, prefix))}; "
                         f"got {value}") from None


def enum_value(enum_type, prefix: str, name: str | None) -> int:
    if name is None:
        return 0  # UNSPECIFIED: the server's default
    try:
        return enum_type.Value(f"{prefix}{str(name).upper()}")
    except ValueError:
        raise ValueError(f"{prefix.rstrip('_').lower()} must be one of {', '.join(choices(enum_type, prefix))}; "
                         f"got {name!r}") from None


def choices(enum_type, prefix: str) -> list[str]:
    return [n.removeprefix(prefix).lower() for n in enum_type.keys() if not n.endswith("UNSPECIFIED")]


def params_to_pb(params: GenerationParams) -> pb.GenerateRequest:
    """A GenerateRequest without its prompt. TypeError / ValueError when a value does not fit
    its wire type (the SDK names the field)."""
    values = {name: getattr(params, name) for name in (*_OPTIONAL, *_PLAIN)}
    request = pb.GenerateRequest(
        mode=enum_value(pb.Mode, "MODE_", params.mode),
        policy=enum_value(pb.Policy, "POLICY_", params.policy),
        stop=list(params.stop),
        **values,
    )
    tree = params.tree_fields()
    if tree:
        request.tree.CopyFrom(common_pb2.TreeParams(**tree))
    if params.response_format is not None:
        request.response_format.CopyFrom(constraint_to_pb(params.response_format))
    return request


def params_from_pb(msg: pb.GenerateRequest) -> GenerationParams:
    """The caller's settings, unset fields as None (ValueError names a bad enum value)."""
    values = {name: getattr(msg, name) if msg.HasField(name) else None for name in _OPTIONAL}
    values.update({name: getattr(msg, name) for name in _PLAIN})
    tree = {kwarg: getattr(msg.tree, field) if msg.tree.HasField(field) else None
            for kwarg, field in TREE_KWARGS.items()} if msg.HasField("tree") else {}
    return GenerationParams(
        mode=enum_name(pb.Mode, "MODE_", msg.mode),
        policy=enum_name(pb.Policy, "POLICY_", msg.policy),
        stop=tuple(msg.stop),
        response_format=constraint_from_pb(msg.response_format) if msg.HasField("response_format") else None,
        **values,
        **tree,
    )


def constraint_to_pb(constraint: OutputConstraint) -> common_pb2.OutputConstraint:
    kind = common_pb2.OutputConstraint.Kind.Value(f"KIND_{constraint.kind.name}")
    return common_pb2.OutputConstraint(kind=kind, spec=constraint.spec)


def constraint_from_pb(msg: common_pb2.OutputConstraint, start: int = 0) -> OutputConstraint | None:
    """None for KIND_UNSPECIFIED (free text); ValueError for an unknown kind."""
    if msg.kind == common_pb2.OutputConstraint.KIND_UNSPECIFIED:
        return None
    try:
        kind = ConstraintKind[common_pb2.OutputConstraint.Kind.Name(msg.kind).removeprefix("KIND_")]
    except (ValueError, KeyError):
        raise ValueError(f"response_format.kind must be one of {', '.join(k.value for k in ConstraintKind)}; "
                         f"got {msg.kind}") from None
    return OutputConstraint(kind, msg.spec, start)

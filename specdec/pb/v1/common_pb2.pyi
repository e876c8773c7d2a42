from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntropyOf(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTROPY_OF_UNSPECIFIED: _ClassVar[EntropyOf]
    ENTROPY_OF_NEXT: _ClassVar[EntropyOf]
    ENTROPY_OF_DRAFTED: _ClassVar[EntropyOf]
ENTROPY_OF_UNSPECIFIED: EntropyOf
ENTROPY_OF_NEXT: EntropyOf
ENTROPY_OF_DRAFTED: EntropyOf

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_k", "top_p", "constraint", "constraint_start")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_START_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_k: int
    top_p: float
    constraint: OutputConstraint
    constraint_start: int
    def __init__(self, temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., constraint: _Optional[_Union[OutputConstraint, _Mapping]] = ..., constraint_start: _Optional[int] = ...) -> None: ...

class OutputConstraint(_message.Message):
    __slots__ = ("kind", "spec")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[OutputConstraint.Kind]
        KIND_JSON_OBJECT: _ClassVar[OutputConstraint.Kind]
        KIND_JSON_SCHEMA: _ClassVar[OutputConstraint.Kind]
        KIND_REGEX: _ClassVar[OutputConstraint.Kind]
        KIND_GRAMMAR: _ClassVar[OutputConstraint.Kind]
    KIND_UNSPECIFIED: OutputConstraint.Kind
    KIND_JSON_OBJECT: OutputConstraint.Kind
    KIND_JSON_SCHEMA: OutputConstraint.Kind
    KIND_REGEX: OutputConstraint.Kind
    KIND_GRAMMAR: OutputConstraint.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    kind: OutputConstraint.Kind
    spec: str
    def __init__(self, kind: _Optional[_Union[OutputConstraint.Kind, str]] = ..., spec: _Optional[str] = ...) -> None: ...

class StopRule(_message.Message):
    __slots__ = ("max_tokens", "min_tokens", "entropy_lambda", "reject_threshold", "entropy_of")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    REJECT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_OF_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    min_tokens: int
    entropy_lambda: float
    reject_threshold: float
    entropy_of: EntropyOf
    def __init__(self, max_tokens: _Optional[int] = ..., min_tokens: _Optional[int] = ..., entropy_lambda: _Optional[float] = ..., reject_threshold: _Optional[float] = ..., entropy_of: _Optional[_Union[EntropyOf, str]] = ...) -> None: ...

class Proposal(_message.Message):
    __slots__ = ("token_ids", "probs")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROBS_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    probs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., probs: _Optional[_Iterable[float]] = ...) -> None: ...

class TreeParams(_message.Message):
    __slots__ = ("width", "depth", "max_nodes", "sibling_threshold", "prob_threshold", "merge_context")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_NODES_FIELD_NUMBER: _ClassVar[int]
    SIBLING_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROB_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MERGE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    width: int
    depth: int
    max_nodes: int
    sibling_threshold: float
    prob_threshold: float
    merge_context: int
    def __init__(self, width: _Optional[int] = ..., depth: _Optional[int] = ..., max_nodes: _Optional[int] = ..., sibling_threshold: _Optional[float] = ..., prob_threshold: _Optional[float] = ..., merge_context: _Optional[int] = ...) -> None: ...

class DraftTree(_message.Message):
    __slots__ = ("tokens", "parents", "proposals", "root_proposal", "proposal_ids", "dag_nodes", "merged_nodes", "saved_rows", "saved_forwards")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    PROPOSALS_FIELD_NUMBER: _ClassVar[int]
    ROOT_PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_IDS_FIELD_NUMBER: _ClassVar[int]
    DAG_NODES_FIELD_NUMBER: _ClassVar[int]
    MERGED_NODES_FIELD_NUMBER: _ClassVar[int]
    SAVED_ROWS_FIELD_NUMBER: _ClassVar[int]
    SAVED_FORWARDS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[int]
    parents: _containers.RepeatedScalarFieldContainer[int]
    proposals: _containers.RepeatedCompositeFieldContainer[Proposal]
    root_proposal: int
    proposal_ids: _containers.RepeatedScalarFieldContainer[int]
    dag_nodes: int
    merged_nodes: int
    saved_rows: int
    saved_forwards: int
    def __init__(self, tokens: _Optional[_Iterable[int]] = ..., parents: _Optional[_Iterable[int]] = ..., proposals: _Optional[_Iterable[_Union[Proposal, _Mapping]]] = ..., root_proposal: _Optional[int] = ..., proposal_ids: _Optional[_Iterable[int]] = ..., dag_nodes: _Optional[int] = ..., merged_nodes: _Optional[int] = ..., saved_rows: _Optional[int] = ..., saved_forwards: _Optional[int] = ...) -> None: ...

class WorkerInfo(_message.Message):
    __slots__ = ("role", "model_name", "preset", "vocab_size", "context_length", "eos_token_ids", "hidden_size", "has_acceptance_head", "sessions", "evictions", "max_sessions", "proposal_top_n", "cost_profile", "max_batch", "budgeted_forwards", "overrun_forwards", "device", "host")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    HAS_ACCEPTANCE_HEAD_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_TOP_N_FIELD_NUMBER: _ClassVar[int]
    COST_PROFILE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    BUDGETED_FORWARDS_FIELD_NUMBER: _ClassVar[int]
    OVERRUN_FORWARDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    role: str
    model_name: str
    preset: str
    vocab_size: int
    context_length: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    hidden_size: int
    has_acceptance_head: bool
    sessions: int
    evictions: int
    max_sessions: int
    proposal_top_n: int
    cost_profile: str
    max_batch: int
    budgeted_forwards: int
    overrun_forwards: int
    device: str
    host: str
    def __init__(self, role: _Optional[str] = ..., model_name: _Optional[str] = ..., preset: _Optional[str] = ..., vocab_size: _Optional[int] = ..., context_length: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., hidden_size: _Optional[int] = ..., has_acceptance_head: _Optional[bool] = ..., sessions: _Optional[int] = ..., evictions: _Optional[int] = ..., max_sessions: _Optional[int] = ..., proposal_top_n: _Optional[int] = ..., cost_profile: _Optional[str] = ..., max_batch: _Optional[int] = ..., budgeted_forwards: _Optional[int] = ..., overrun_forwards: _Optional[int] = ..., device: _Optional[str] = ..., host: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...

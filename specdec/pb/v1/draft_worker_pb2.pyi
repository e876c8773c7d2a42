from specdec.pb.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DraftRequest(_message.Message):
    __slots__ = ("session_id", "start", "tokens", "rule", "sampling", "seed")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    start: int
    tokens: _containers.RepeatedScalarFieldContainer[int]
    rule: _common_pb2.StopRule
    sampling: _common_pb2.SamplingParams
    seed: int
    def __init__(self, session_id: _Optional[str] = ..., start: _Optional[int] = ..., tokens: _Optional[_Iterable[int]] = ..., rule: _Optional[_Union[_common_pb2.StopRule, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class DraftToken(_message.Message):
    __slots__ = ("token_id", "q", "entropy", "compute_seconds")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    q: _common_pb2.Proposal
    entropy: float
    compute_seconds: float
    def __init__(self, token_id: _Optional[int] = ..., q: _Optional[_Union[_common_pb2.Proposal, _Mapping]] = ..., entropy: _Optional[float] = ..., compute_seconds: _Optional[float] = ...) -> None: ...

class DraftTreeRequest(_message.Message):
    __slots__ = ("session_id", "start", "tokens", "tree", "sampling", "seed")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    start: int
    tokens: _containers.RepeatedScalarFieldContainer[int]
    tree: _common_pb2.TreeParams
    sampling: _common_pb2.SamplingParams
    seed: int
    def __init__(self, session_id: _Optional[str] = ..., start: _Optional[int] = ..., tokens: _Optional[_Iterable[int]] = ..., tree: _Optional[_Union[_common_pb2.TreeParams, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class DraftTreeResponse(_message.Message):
    __slots__ = ("tree", "compute_seconds")
    TREE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tree: _common_pb2.DraftTree
    compute_seconds: float
    def __init__(self, tree: _Optional[_Union[_common_pb2.DraftTree, _Mapping]] = ..., compute_seconds: _Optional[float] = ...) -> None: ...

class DraftCommand(_message.Message):
    __slots__ = ("session_id", "round", "stop", "draft", "traceparent")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    round: int
    stop: bool
    draft: DraftRequest
    traceparent: str
    def __init__(self, session_id: _Optional[str] = ..., round: _Optional[int] = ..., stop: _Optional[bool] = ..., draft: _Optional[_Union[DraftRequest, _Mapping]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class DraftStreamItem(_message.Message):
    __slots__ = ("round", "token", "end")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    round: int
    token: DraftToken
    end: bool
    def __init__(self, round: _Optional[int] = ..., token: _Optional[_Union[DraftToken, _Mapping]] = ..., end: _Optional[bool] = ...) -> None: ...

from specdec.pb.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_AUTOREGRESSIVE: _ClassVar[Mode]
    MODE_SEQUENTIAL: _ClassVar[Mode]
    MODE_PEARL: _ClassVar[Mode]
    MODE_GSD: _ClassVar[Mode]
    MODE_AUTO: _ClassVar[Mode]

class Policy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_UNSPECIFIED: _ClassVar[Policy]
    POLICY_FIXED: _ClassVar[Policy]
    POLICY_HEURISTIC: _ClassVar[Policy]
    POLICY_ADAEDL: _ClassVar[Policy]
    POLICY_SPECDECPP: _ClassVar[Policy]
    POLICY_AUTO: _ClassVar[Policy]
    POLICY_ADAEDL_LATE: _ClassVar[Policy]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
MODE_UNSPECIFIED: Mode
MODE_AUTOREGRESSIVE: Mode
MODE_SEQUENTIAL: Mode
MODE_PEARL: Mode
MODE_GSD: Mode
MODE_AUTO: Mode
POLICY_UNSPECIFIED: Policy
POLICY_FIXED: Policy
POLICY_HEURISTIC: Policy
POLICY_ADAEDL: Policy
POLICY_SPECDECPP: Policy
POLICY_AUTO: Policy
POLICY_ADAEDL_LATE: Policy
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_CANCELLED: FinishReason

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "prompt_token_ids", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "mode", "policy", "draft_length", "threshold", "ignore_eos", "chat", "stop", "tree", "messages", "response_format")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DRAFT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    mode: Mode
    policy: Policy
    draft_length: int
    threshold: float
    ignore_eos: bool
    chat: bool
    stop: _containers.RepeatedScalarFieldContainer[str]
    tree: _common_pb2.TreeParams
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    response_format: _common_pb2.OutputConstraint
    def __init__(self, prompt: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., mode: _Optional[_Union[Mode, str]] = ..., policy: _Optional[_Union[Policy, str]] = ..., draft_length: _Optional[int] = ..., threshold: _Optional[float] = ..., ignore_eos: _Optional[bool] = ..., chat: _Optional[bool] = ..., stop: _Optional[_Iterable[str]] = ..., tree: _Optional[_Union[_common_pb2.TreeParams, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., response_format: _Optional[_Union[_common_pb2.OutputConstraint, _Mapping]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class GenerationStats(_message.Message):
    __slots__ = ("tokens", "prompt_tokens", "rounds", "draft_tokens", "accepted_tokens", "emitted_tokens", "acceptance_rate", "mean_acceptance_length", "time_to_first_token_s", "wall_s", "draft_compute_s", "target_compute_s", "network_s", "critical_compute_s", "reprefills", "draft_fallback", "seed", "tree_nodes", "dag_nodes", "merged_nodes", "mode_run", "auto_k_rounds", "saved_rows", "saved_forwards")
    class AutoKRoundsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EMITTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_ACCEPTANCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_S_FIELD_NUMBER: _ClassVar[int]
    WALL_S_FIELD_NUMBER: _ClassVar[int]
    DRAFT_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    NETWORK_S_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    REPREFILLS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TREE_NODES_FIELD_NUMBER: _ClassVar[int]
    DAG_NODES_FIELD_NUMBER: _ClassVar[int]
    MERGED_NODES_FIELD_NUMBER: _ClassVar[int]
    MODE_RUN_FIELD_NUMBER: _ClassVar[int]
    AUTO_K_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SAVED_ROWS_FIELD_NUMBER: _ClassVar[int]
    SAVED_FORWARDS_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    prompt_tokens: int
    rounds: int
    draft_tokens: int
    accepted_tokens: int
    emitted_tokens: int
    acceptance_rate: float
    mean_acceptance_length: float
    time_to_first_token_s: float
    wall_s: float
    draft_compute_s: float
    target_compute_s: float
    network_s: float
    critical_compute_s: float
    reprefills: int
    draft_fallback: bool
    seed: int
    tree_nodes: int
    dag_nodes: int
    merged_nodes: int
    mode_run: str
    auto_k_rounds: _containers.ScalarMap[int, int]
    saved_rows: int
    saved_forwards: int
    def __init__(self, tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., rounds: _Optional[int] = ..., draft_tokens: _Optional[int] = ..., accepted_tokens: _Optional[int] = ..., emitted_tokens: _Optional[int] = ..., acceptance_rate: _Optional[float] = ..., mean_acceptance_length: _Optional[float] = ..., time_to_first_token_s: _Optional[float] = ..., wall_s: _Optional[float] = ..., draft_compute_s: _Optional[float] = ..., target_compute_s: _Optional[float] = ..., network_s: _Optional[float] = ..., critical_compute_s: _Optional[float] = ..., reprefills: _Optional[int] = ..., draft_fallback: _Optional[bool] = ..., seed: _Optional[int] = ..., tree_nodes: _Optional[int] = ..., dag_nodes: _Optional[int] = ..., merged_nodes: _Optional[int] = ..., mode_run: _Optional[str] = ..., auto_k_rounds: _Optional[_Mapping[int, int]] = ..., saved_rows: _Optional[int] = ..., saved_forwards: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "token_ids", "finish_reason", "stats")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    finish_reason: FinishReason
    stats: GenerationStats
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., stats: _Optional[_Union[GenerationStats, _Mapping]] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("text", "token_ids", "finish_reason", "stats")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    finish_reason: FinishReason
    stats: GenerationStats
    def __init__(self, text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., stats: _Optional[_Union[GenerationStats, _Mapping]] = ...) -> None: ...

class CoordinatorInfo(_message.Message):
    __slots__ = ("preset", "target_model", "draft_model", "modes", "policies", "context_length", "vocab_size", "eos_token_ids", "draft_addresses", "target_addresses", "max_concurrent_requests")
    PRESET_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODEL_FIELD_NUMBER: _ClassVar[int]
    DRAFT_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    TARGET_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    preset: str
    target_model: str
    draft_model: str
    modes: _containers.RepeatedScalarFieldContainer[str]
    policies: _containers.RepeatedScalarFieldContainer[str]
    context_length: int
    vocab_size: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    draft_addresses: _containers.RepeatedScalarFieldContainer[str]
    target_addresses: _containers.RepeatedScalarFieldContainer[str]
    max_concurrent_requests: int
    def __init__(self, preset: _Optional[str] = ..., target_model: _Optional[str] = ..., draft_model: _Optional[str] = ..., modes: _Optional[_Iterable[str]] = ..., policies: _Optional[_Iterable[str]] = ..., context_length: _Optional[int] = ..., vocab_size: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., draft_addresses: _Optional[_Iterable[str]] = ..., target_addresses: _Optional[_Iterable[str]] = ..., max_concurrent_requests: _Optional[int] = ...) -> None: ...

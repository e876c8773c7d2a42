"""Generated protobuf / gRPC modules only (`specdec.pb.v1`): `make protos` writes them
from protos/specdec/v1; never edited by hand. The hand-written wire code is specdec.rpc."""

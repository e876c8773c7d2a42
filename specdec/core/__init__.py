"""The core: the maths of lossless speculative decoding and the types every layer shares.

Pure torch (no model code, no grpc, no protobuf): sampling, keyed randomness, lossless
acceptance, draft-length policies, the request and its stats, GSD's tree types, the
measured draft/target speed ratio. Terms and formulas: docs/algorithms.md.
"""

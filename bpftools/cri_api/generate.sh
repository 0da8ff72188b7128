#!/bin/sh
# Regenerates cri_runtime_v1_pb2.py from cri_runtime_v1.proto (checked in: bpftools needs no protoc at build time).
# The command that made the checked-in file, in a throwaway venv:
#   python3 -m venv /tmp/gen && /tmp/gen/bin/pip install grpcio-tools==1.85.1
#   GRPC_TOOLS=/tmp/gen/bin/python bpftools/cri_api/generate.sh
# The gencode's protobuf version (the header of cri_runtime_v1_pb2.py) is the floor of `protobuf` in pyproject.toml.
set -eu
cd "$(dirname "$0")"
"${GRPC_TOOLS:-python3}" -m grpc_tools.protoc --proto_path=. --python_out=. cri_runtime_v1.proto
sed -i 's/^# NO CHECKED-IN PROTOBUF GENCODE$/# (checked in: made by bpftools\/cri_api\/generate.sh from cri_runtime_v1.proto)/' cri_runtime_v1_pb2.py

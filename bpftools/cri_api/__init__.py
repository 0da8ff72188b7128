"""The CRI runtime.v1 messages bpftools uses: cri_runtime_v1.proto and the module protoc made of
it (cri_runtime_v1_pb2.py, checked in; generate.sh has the command)."""

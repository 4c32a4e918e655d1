#!/usr/bin/env bash
# Regenerates scistream_pb2.py and scistream_pb2_grpc.py from scistream.proto
# (grpcio-tools, see tests/requirements.txt). The proto is compiled from the
# collection root's parent so that the generated _pb2_grpc imports _pb2 by its
# full package name (ansible_collections.scistream.gateway...), which works
# both in Ansible's module packaging and in the server's venv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)               # the collection
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkg=ansible_collections/scistream/gateway/plugins/module_utils/s2cs
mkdir -p "$tmp/$pkg"
cp "$here/scistream.proto" "$tmp/$pkg/"
python -m grpc_tools.protoc -I "$tmp" --python_out="$tmp" --grpc_python_out="$tmp" "$tmp/$pkg/scistream.proto"
for f in scistream_pb2.py scistream_pb2_grpc.py; do
  cp "$tmp/$pkg/$f" "$here/$f"
done

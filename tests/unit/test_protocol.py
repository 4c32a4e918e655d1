"""protocol.py against scistream.proto: the same messages, fields, numbers, types and service, the same bytes on the wire.

protoc (grpcio-tools) compiles the .proto into a descriptor set; the messages it describes and the ones
protocol.py builds must agree field for field, and serialize every value alike. A real gRPC server on
loopback then answers through ControlStub / add_control_servicer.
"""

import os
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given, settings, strategies as st

from ansible_collections.scistream.gateway.plugins.module_utils.s2cs import protocol

PROTO_DIR = os.path.join(os.path.dirname(protocol.__file__))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """scistream.proto as protoc compiles it: a FileDescriptorProto."""
    out = tmp_path_factory.mktemp("proto") / "scistream.desc"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_DIR, "--descriptor_set_out=%s" % out,
                    "scistream.proto"], check=True, capture_output=True, timeout=60)
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (proto,) = files.file
    return proto


def _shape(proto):
    messages = {m.name: [(f.name, f.number, f.type, f.label, f.json_name) for f in m.field] for m in proto.message_type}
    services = {s.name: [(m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                         for m in s.method] for s in proto.service}
    return proto.package, proto.syntax, messages, services


def test_declarations_are_the_proto(compiled):
    assert _shape(protocol.file_descriptor_proto()) == _shape(compiled)


def _compiled_class(compiled, name):
    pool = descriptor_pool.DescriptorPool()
    pool.Add(compiled)
    descriptor = pool.FindMessageTypeByName("scistream." + name)
    return message_factory.GetMessageClass(descriptor)


TEXT = st.text(max_size=40)
LISTS = st.lists(TEXT, max_size=4)
INT32 = st.integers(min_value=-2 ** 31, max_value=2 ** 31 - 1)
VALUES = {
    "Request": st.fixed_dictionaries({"uid": TEXT, "role": TEXT, "num_conn": INT32, "rate": INT32}),
    "UpdateTargets": st.fixed_dictionaries({"uid": TEXT, "remote_listeners": LISTS, "role": TEXT}),
    "Release": st.fixed_dictionaries({"uid": TEXT}),
    "Hello": st.fixed_dictionaries({"uid": TEXT, "prod_listeners": LISTS, "role": TEXT}),
    "Response": st.fixed_dictionaries({"listeners": LISTS, "prod_listeners": LISTS}),
    "AppResponse": st.fixed_dictionaries({"message": TEXT, "listeners": LISTS}),
}


@pytest.mark.parametrize("name", sorted(protocol.MESSAGES))
def test_same_bytes_on_the_wire(compiled, name):
    theirs = _compiled_class(compiled, name)
    ours = getattr(protocol, name)

    @settings(max_examples=200, deadline=None)
    @given(VALUES[name])
    def check(values):
        wire = ours(**values).SerializeToString()
        assert wire == theirs(**values).SerializeToString()
        assert ours.FromString(wire) == ours(**values)

    check()  # pylint: disable=no-value-for-parameter


class Echo(protocol.ControlServicer):
    """Answers req with the uid as a listener; update, release and hello stay UNIMPLEMENTED."""

    def req(self, request, context):
        return protocol.Response(listeners=["%s:%d" % (request.uid, request.num_conn)], prod_listeners=[request.role])


def test_stub_and_servicer_over_a_real_channel():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    protocol.add_control_servicer(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel("127.0.0.1:%d" % port) as channel:
            stub = protocol.ControlStub(channel)
            answer = stub.req(protocol.Request(uid="abc", role="PROD", num_conn=3, rate=10000), timeout=10)
            assert list(answer.listeners) == ["abc:3"] and list(answer.prod_listeners) == ["PROD"]
            with pytest.raises(grpc.RpcError) as raised:
                stub.release(protocol.Release(uid="abc"), timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        server.stop(None)


def test_method_paths_are_the_protocols():
    assert [protocol.method_path(m) for m in protocol.METHODS] == [
        "/scistream.Control/req", "/scistream.Control/update", "/scistream.Control/release", "/scistream.Control/hello"]

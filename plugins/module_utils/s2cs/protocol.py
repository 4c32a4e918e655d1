# -*- coding: utf-8 -*-
# Copyright (c) 2026, SciStream gateway contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The SciStream control protocol (``scistream.proto``) as Python declarations.

The messages and the ``Control`` service are declared here, field for field
and number for number as ``scistream.proto`` says, and built at import time
with protobuf's descriptor API and grpcio's method handlers, instead of
checking in protoc's output: the same wire format, with no generated code
tied to one protobuf release (protoc's output refuses an older runtime),
and a module that imports where neither library is installed (the Ansible
modules then report ``missing_required_lib``). ``tests/unit/test_protocol.py``
compiles ``scistream.proto`` with grpcio-tools and checks that the two agree.

Use ``Request(...)``, ``Response(...)`` and the other message classes,
``ControlStub(channel)`` on the client side (a sync or an asyncio channel)
and ``add_control_servicer(servicer, server)`` on the server side.
"""

from __future__ import annotations

try:
    import grpc
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    HAS_PROTOBUF = True
    PROTOBUF_IMPORT_ERROR = None
except ImportError as exc:  # the callers report it (HAS_GRPC in client, control and server)
    grpc = descriptor_pb2 = descriptor_pool = message_factory = None
    HAS_PROTOBUF = False
    PROTOBUF_IMPORT_ERROR = exc

PACKAGE = "scistream"
SERVICE = "Control"

STRING = "string"
INT32 = "int32"

#: message -> ((field, number, type, repeated), ...), as in scistream.proto. Names and numbers are the wire
#: protocol that every SciStream client speaks: they never change.
MESSAGES = {
    "Request": (("uid", 1, STRING, False), ("role", 2, STRING, False), ("num_conn", 3, INT32, False),
                ("rate", 4, INT32, False)),
    "UpdateTargets": (("uid", 1, STRING, False), ("remote_listeners", 2, STRING, True), ("role", 3, STRING, False)),
    "Release": (("uid", 1, STRING, False),),
    "Hello": (("uid", 1, STRING, False), ("prod_listeners", 2, STRING, True), ("role", 3, STRING, False)),
    "Response": (("listeners", 1, STRING, True), ("prod_listeners", 2, STRING, True)),
    "AppResponse": (("message", 1, STRING, False), ("listeners", 2, STRING, True)),
}

#: method -> (request message, response message), all unary.
METHODS = {
    "req": ("Request", "Response"),
    "update": ("UpdateTargets", "Response"),
    "release": ("Release", "Response"),
    "hello": ("Hello", "AppResponse"),
}


def method_path(method):
    """The gRPC path of one of the service's methods: ``/scistream.Control/req``."""
    return "/%s.%s/%s" % (PACKAGE, SERVICE, method)


def file_descriptor_proto():
    """scistream.proto as a FileDescriptorProto (what protoc would compile it to)."""
    types = {STRING: descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
             INT32: descriptor_pb2.FieldDescriptorProto.TYPE_INT32}
    labels = {True: descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
              False: descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL}
    proto = descriptor_pb2.FileDescriptorProto(name="scistream/scistream.proto", package=PACKAGE, syntax="proto3")
    for name, fields in MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, repeated in fields:
            message.field.add(name=field, number=number, type=types[kind], label=labels[repeated],
                              json_name=_json_name(field))
    service = proto.service.add(name=SERVICE)
    for method, (request, response) in METHODS.items():
        service.method.add(name=method, input_type=".%s.%s" % (PACKAGE, request),
                           output_type=".%s.%s" % (PACKAGE, response))
    return proto


def _json_name(field):
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _message_classes():
    # A pool of our own: no clash with another copy of the protocol loaded into protobuf's default pool.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor_proto())
    classes = {}
    for name in MESSAGES:
        descriptor = pool.FindMessageTypeByName("%s.%s" % (PACKAGE, name))
        if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.21
            classes[name] = message_factory.GetMessageClass(descriptor)
        else:  # older releases (Debian 12's python3-protobuf is 3.21)
            classes[name] = message_factory.MessageFactory(pool).GetPrototype(descriptor)
    return classes


if HAS_PROTOBUF:
    _CLASSES = _message_classes()
    Request = _CLASSES["Request"]
    UpdateTargets = _CLASSES["UpdateTargets"]
    Release = _CLASSES["Release"]
    Hello = _CLASSES["Hello"]
    Response = _CLASSES["Response"]
    AppResponse = _CLASSES["AppResponse"]
else:
    _CLASSES = {}
    Request = UpdateTargets = Release = Hello = Response = AppResponse = None


class ControlStub:
    """The client side: one callable per method (``stub.req(Request(...), timeout=...)``, ``.future``, ...)."""

    def __init__(self, channel):
        for method, (request, response) in METHODS.items():
            setattr(self, method, channel.unary_unary(method_path(method),
                                                      request_serializer=_CLASSES[request].SerializeToString,
                                                      response_deserializer=_CLASSES[response].FromString))


class ControlServicer:
    """A servicer's base: every method answers UNIMPLEMENTED until a subclass defines it."""

    def req(self, request, context):
        """Reserve listeners for a session."""
        return _unimplemented(context)

    def update(self, request, context):
        """Point a session at new targets."""
        return _unimplemented(context)

    def release(self, request, context):
        """End a session."""
        return _unimplemented(context)

    def hello(self, request, context):
        """The producer's listeners for a waiting req."""
        return _unimplemented(context)


def _unimplemented(context):
    context.set_code(grpc.StatusCode.UNIMPLEMENTED)
    context.set_details("Method not implemented")
    raise NotImplementedError("Method not implemented")


def add_control_servicer(servicer, server):
    """Serve ``servicer``'s req / update / release / hello on ``server`` (a grpc or grpc.aio server)."""
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(getattr(servicer, method),
                                                    request_deserializer=_CLASSES[request].FromString,
                                                    response_serializer=_CLASSES[response].SerializeToString)
        for method, (request, response) in METHODS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("%s.%s" % (PACKAGE, SERVICE), handlers),))

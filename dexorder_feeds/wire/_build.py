"""Turn a serialized FileDescriptorProto into message classes and enum wrappers at import time.

The ``*_pb2`` modules beside this file are written by ``proto/generate.py``. Instead of protoc's
Python gencode, which pins the protobuf runtime it accepts (``ValidateProtobufRuntimeVersion``
refuses every runtime older than the protoc that wrote it, and newer runtimes drop gencode more
than a major version old), they hold the descriptor bytes and call :func:`build`. It uses only
what every protobuf runtime from 4.22 to 7.x offers, in both the upb and the pure-Python
implementation:

* ``descriptor_pool.Default().AddSerializedFile`` (what gencode itself calls),
* ``message_factory.GetMessageClass`` (the public replacement of ``MessageFactory.GetPrototype``),
* ``enum_type_wrapper.EnumTypeWrapper`` (the object gencode exposes for an enum),
* ``symbol_database.Default().RegisterMessage`` (gencode registers each class it builds).

Nested enums need nothing here: the message class itself exposes them and their values, as
gencode classes do (``Notification.Status``, ``Notification.OK``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, message_factory, symbol_database
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper


def _message_class(descriptor: Any, module: str, qualname: str) -> type:
    cls = message_factory.GetMessageClass(descriptor)
    # GetMessageClass leaves __module__ unset; name the class where it is importable from, as
    # gencode does, so repr(), pickle and error messages point at dexorder_feeds.wire.*_pb2.
    cls.__module__ = module
    cls.__qualname__ = qualname
    # Nested messages pickle (and Any unpacks) through the symbol database; gencode registers
    # every class it builds, so do the same.
    symbol_database.Default().RegisterMessage(cls)
    for nested in descriptor.nested_types:
        setattr(cls, nested.name, _message_class(nested, module, f"{qualname}.{nested.name}"))
    return cls


def build(module: str, serialized_file: bytes) -> tuple[Any, dict[str, Any]]:
    """Add the file to the default pool; return its FileDescriptor and its top-level symbols.

    The symbols are the message classes and enum wrappers by name (nested messages hang off
    their parent class). ``module`` is the importing module's ``__name__``.
    """
    file = descriptor_pool.Default().AddSerializedFile(serialized_file)
    symbols: dict[str, Any] = {}
    for name, enum in file.enum_types_by_name.items():
        symbols[name] = EnumTypeWrapper(enum)
    for name, message in file.message_types_by_name.items():
        symbols[name] = _message_class(message, module, name)
    return file, symbols

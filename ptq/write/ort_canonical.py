"""Re-serialize an ORT-format flatbuffer in one fixed order, so the same model gives the same bytes.

Why: onnxruntime's ORT writer is not deterministic. ``InferenceSession::SaveToOrtFormat`` builds a
fresh ``KernelTypeStrResolver`` for the saved graph and ``KernelTypeStrResolver::SaveToOrtFormat``
(onnxruntime/core/framework/kernel_type_str_resolver.cc) creates one flatbuffer table per entry
while iterating its ``op_kernel_type_str_map_`` and each entry's kernel-type-string map. Those are
``InlinedHashMap`` (absl::flat_hash_map, include/onnxruntime/core/common/inlined_containers.h),
whose iteration order is salted per table with the address of its heap array (abseil
raw_hash_set.h ``PerTableSalt``: "randomize iteration order per-table"). The vectors are then
sorted by key (``CreateVectorOfSortedTables``), so what the file *says* is the same every time,
but where each table and shared string sits, the offsets and the alignment padding differ from
save to save, in one process and across processes (measured: 3 saves of one model, 3 hashes; on
PP-OCR det two sizes 8 bytes apart). onnxruntime offers no session option that orders it or leaves
the resolver out (an ORT-format session needs it to resolve kernels), so there is no switch to set.

What this does: read every table of the saved file with onnxruntime's own generated flatbuffer
classes (``onnxruntime.tools.ort_format_model``'s ``ort_flatbuffers_py.fbs``) and write the same
fields back through the same classes' builder functions, depth first, in the order the file's
vectors already hold. Nothing is reordered, dropped or added: every field's value is copied
(strings are written once and shared, which the format allows), so the result means what the
input meant; only the byte placement becomes a function of the content. The field layout comes
from the generated classes, not from this module, so a schema change in onnxruntime is followed
without edits here.
"""

from __future__ import annotations

import importlib
import inspect
from functools import cache

ORT_FILE_IDENTIFIER = b"ORTM"


def canonical_ort_bytes(data: bytes) -> bytes:
    """The ORT-format model in ``data`` written again, in an order fixed by its content."""
    import flatbuffers

    root = _fbs_class("InferenceSession").GetRootAs(data, 0)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(_copy_table(builder, root), file_identifier=ORT_FILE_IDENTIFIER)
    return bytes(builder.Output())


@cache
def _fbs_module(name: str):
    from onnxruntime.tools import ort_format_model  # noqa: F401 - puts ort_flatbuffers_py on sys.path

    return importlib.import_module(f"ort_flatbuffers_py.fbs.{name}")


def _fbs_class(name: str):
    return getattr(_fbs_module(name), name)


@cache
def _plan(cls) -> tuple[tuple, ...]:
    """How to copy each field of a generated table class: those with an ``Add<Field>`` builder
    function, as (kind, reader functions, adder); kind is "numbers" (a vector of scalars),
    "vector" (of strings, tables or structs) or "value" (a scalar, string, table or union)."""
    module = _fbs_module(cls.__name__)
    plan = []
    for name, adder in inspect.getmembers(module, inspect.isfunction):
        field = name[3:]
        if not name.startswith("Add") or not hasattr(cls, field):
            continue
        if hasattr(cls, f"{field}AsNumpy"):
            plan.append(("numbers", field, (getattr(cls, f"{field}IsNone"), getattr(cls, f"{field}AsNumpy")), adder))
        elif hasattr(cls, f"{field}Length"):
            readers = (getattr(cls, f"{field}IsNone"), getattr(cls, f"{field}Length"), getattr(cls, field), getattr(module, f"Start{field}Vector"))
            plan.append(("vector", field, readers, adder))
        else:
            plan.append(("value", field, (getattr(cls, field),), adder))
    return tuple(plan)


@cache
def _struct_fields(cls) -> tuple[str, ...] | None:
    """A struct's fields in ``Create<Struct>`` argument order, or None when ``cls`` is a table."""
    create = getattr(_fbs_module(cls.__name__), f"Create{cls.__name__}", None)
    if create is None:
        return None
    return tuple(p[0].upper() + p[1:] for p in list(inspect.signature(create).parameters)[1:])


def _copy_table(builder, table) -> int:
    cls = type(table)
    values = []  # children first: a flatbuffer table cannot be written while another one is open
    for kind, field, readers, adder in _plan(cls):
        if kind == "numbers":  # the generated reader gives the declared element type
            if not readers[0](table):
                values.append((adder, builder.CreateNumpyVector(readers[1](table))))
        elif kind == "vector":
            if not readers[0](table):
                values.append((adder, _copy_vector(builder, table, *readers[1:])))
        else:
            value = readers[0](table)
            if value is None:
                continue
            if isinstance(value, bytes):
                value = builder.CreateSharedString(value)
            elif hasattr(value, "_tab"):
                value = _copy_table(builder, value)
            elif not isinstance(value, (bool, int, float)):  # a union member: typed by its <Field>Type
                value = _copy_table(builder, _union_member(table, field, value))
            values.append((adder, value))
    module = _fbs_module(cls.__name__)
    module.Start(builder)
    for adder, value in values:
        adder(builder, value)
    return module.End(builder)


def _copy_vector(builder, table, length, item_at, start_vector) -> int:
    size = length(table)
    items = [item_at(table, j) for j in range(size)]
    struct_fields = _struct_fields(type(items[0])) if items and hasattr(items[0], "_tab") else None
    if struct_fields is not None:  # structs are written inline, last first
        create = getattr(_fbs_module(type(items[0]).__name__), f"Create{type(items[0]).__name__}")
        start_vector(builder, size)
        for item in reversed(items):
            create(builder, *(getattr(item, f)() for f in struct_fields))
        return builder.EndVector()
    offsets = [builder.CreateSharedString(item) if isinstance(item, bytes) else _copy_table(builder, item) for item in items]
    start_vector(builder, size)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


# The schema's only union (ort.fbs: ``union TypeInfoValue { tensor_type:TensorTypeAndShape,
# sequence_type:SequenceType, map_type:MapType }``): the generated Python names the members, not
# their tables, so the mapping is spelled here and checked against the generated enum.
UNION_MEMBERS = {("TypeInfo", "Value"): ("TypeInfoValue", {"tensor_type": "TensorTypeAndShape", "sequence_type": "SequenceType", "map_type": "MapType"})}


def _union_member(table, field: str, value):
    """The table a union field holds, read as the class its ``<Field>Type`` code names."""
    key = (type(table).__name__, field)
    if key not in UNION_MEMBERS:
        raise LookupError(f"unknown union field {key} in onnxruntime's ORT schema")
    enum_name, tables = UNION_MEMBERS[key]
    codes = {code: name for name, code in vars(_fbs_class(enum_name)).items() if not name.startswith("_") and name != "NONE"}
    if set(codes.values()) != set(tables):
        raise LookupError(f"onnxruntime's {enum_name} has members {sorted(codes.values())}, expected {sorted(tables)}")
    member = _fbs_class(tables[codes[getattr(table, f"{field}Type")()]])()
    member.Init(value.Bytes, value.Pos)
    return member

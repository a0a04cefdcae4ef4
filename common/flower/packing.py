"""A model travels as one array: fewer objects per message through the SuperLink.

Flower 1.41 sends a message's content as a tree of objects — one per record, one per
array, one per 5 MB chunk of an array — and each object is one HTTPS request to the
SuperLink (a SQLite write on push, a read on pull) on each of the message's hops: the
ServerApp to the SuperLink, the SuperLink to the SuperNode, the SuperNode to the ClientApp,
and back. A small CNN is 32 tensors, a DenseNet-121 over 600: measured on loopback with
three hospitals, moving those objects was most of a round's overhead
(``benchmarks/round_overhead.py``), against about a second of hospital work.

:func:`pack_content` replaces every :class:`~flwr.app.ArrayRecord` of a message's content
by a record with the single key :data:`PACKED_KEY`: a ``uint8`` array holding the arrays
as an uncompressed NumPy ``.npz`` archive (names, dtypes, shapes and order kept, values
bit for bit); :func:`unpack_content` restores them. The coordinator's grid
(:class:`~fedward.server.app.sites.OrderedGrid`) packs what it sends and unpacks what it
receives; the hospital's ClientApp (:func:`fedward.client.hospital.handlers.handle`)
unpacks what it receives and packs its reply when the request was packed. Strategies,
DP wrappers, clipping mods and the update guard only ever see unpacked records.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedward.common.errors import FedwardError

PACKED_KEY = "fedward.packed-npz"
"""The only key of a packed :class:`~flwr.app.ArrayRecord`."""


class PackingError(FedwardError):
    """A packed array record could not be read (truncated, not an ``.npz``, or pickled objects)."""


def is_packed(record: ArrayRecord) -> bool:
    """Whether ``record`` is one :func:`pack_arrays` made."""
    return list(record.keys()) == [PACKED_KEY]


def pack_arrays(record: ArrayRecord) -> ArrayRecord:
    """The arrays of ``record`` as one ``uint8`` array of an uncompressed ``.npz`` archive.

    Args:
        record: any arrays; an already packed record is returned as it is.

    Returns:
        A record with the single key :data:`PACKED_KEY`, whose array is ``uint8`` of shape
        ``(n,)``: the ``n`` bytes of the archive (the arrays' bytes plus about 200 bytes of
        header per array).
    """
    if is_packed(record) or not record:
        return record
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **{name: array.numpy() for name, array in record.items()})
    return ArrayRecord({PACKED_KEY: Array(np.frombuffer(buffer.getbuffer(), dtype=np.uint8))})


def unpack_arrays(record: ArrayRecord) -> ArrayRecord:
    """The arrays :func:`pack_arrays` packed, in their order; an unpacked record as it is.

    Raises:
        PackingError: if the packed bytes are not a readable ``.npz`` of plain arrays.
    """
    if not is_packed(record):
        return record
    try:
        blob = record[PACKED_KEY].numpy()
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise PackingError(f"a packed array record holds {blob.dtype} of shape {blob.shape}, not bytes")
        with np.load(io.BytesIO(blob.tobytes()), allow_pickle=False) as archive:
            return ArrayRecord({name: Array(archive[name]) for name in archive.files})
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise PackingError(f"a packed array record is unreadable: {type(err).__name__}: {err}") from None


def pack_content(content: RecordDict) -> RecordDict:
    """``content`` with every array record packed (:func:`pack_arrays`); other records as they are."""
    return RecordDict({name: pack_arrays(r) if isinstance(r, ArrayRecord) else r for name, r in content.items()})


def unpack_content(content: RecordDict) -> RecordDict:
    """``content`` with every packed array record unpacked (:func:`unpack_arrays`).

    Raises:
        PackingError: naming the record, if one cannot be read.
    """
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            try:
                record = unpack_arrays(record)
            except PackingError as err:
                raise PackingError(f"array record {name!r}: {err}") from None
        records[name] = record
    return RecordDict(records)


def has_packed(content: RecordDict) -> bool:
    """Whether any array record of ``content`` is packed."""
    return any(is_packed(record) for record in content.array_records.values())

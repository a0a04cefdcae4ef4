"""The one owner of a run directory: layout, records, checkpoint, lock, card, reader, index.

Every other room writes and reads run directories through this package: file names live in
``layout``, atomic records in ``recorder``, the resumable state in ``checkpoint``, the
writer's lock in ``lock``, weight hashes in ``manifest``, the model card in ``card``, and the
reader and SQLite index every listing uses in ``reader`` and ``index``.
"""

"""The embedding store: sharded Arrow IPC files plus ``manifest.json``.

:class:`Store` is the one read path (memory-mapped, every read checked), :class:`StoreWriter` the one
write path, :class:`Manifest` the one reader of the manifest's JSON, :class:`Artefacts` the cache of
what is built from a store (clusterings, hierarchies, indexes) beside it.
"""

from dataselect.store.manifest import MANIFEST, Manifest, ShardEntry, StoreConfig
from dataselect.store.reader import Store, open_store
from dataselect.store.writer import StoreWriter

__all__ = ["MANIFEST", "Manifest", "ShardEntry", "Store", "StoreConfig", "StoreWriter", "open_store"]

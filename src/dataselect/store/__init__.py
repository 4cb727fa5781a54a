"""The embedding store: sharded Arrow IPC files plus ``manifest.json``; read memory-mapped."""

from dataselect.store.manifest import MANIFEST, load_manifest
from dataselect.store.reader import Store, open_store
from dataselect.store.writer import write_shard

__all__ = ["MANIFEST", "Store", "load_manifest", "open_store", "write_shard"]

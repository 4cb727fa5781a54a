"""Reading instruction pools: JSONL (.gz/.zst), Parquet, `datasets` folders; records normalised to messages."""

from dataselect.pool.hub import HubPool, pool_source
from dataselect.pool.reader import PoolReader, pool_fingerprint
from dataselect.pool.records import PoolRow, normalize_record

__all__ = ["HubPool", "PoolReader", "PoolRow", "normalize_record", "pool_fingerprint", "pool_source"]

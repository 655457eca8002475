"""Sharded datasets: :mod:`.write` generates shards with a manifest (Dask, resumable); :mod:`.read` reads them as one dataset."""

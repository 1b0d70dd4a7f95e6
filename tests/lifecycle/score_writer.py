"""A scoring run in a child process, for the R4 kill tests: python -m tests.lifecycle.score_writer.

URL MODEL ROWS RUN_ID stage  -> write a staged set, print STAGED, then wait to be killed
URL MODEL ROWS RUN_ID write  -> print WRITING, then write (killed part-way through)
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from tasks.db import make_engine
from tasks.scoring import write_score_set


def frame(rows: int, seed: int) -> pd.DataFrame:
    """A deterministic score frame of the given size."""
    rng = np.random.default_rng(seed)
    keys = "u" + pd.Series(np.arange(rows)).astype(str).str.zfill(8)
    return pd.DataFrame({"entity_key": keys, "score": rng.random(rows)})


def main() -> None:
    url, model, rows, run_id, mode = sys.argv[1:6]
    engine = make_engine(url)
    data = frame(int(rows), seed=len(run_id))
    if mode == "write":
        # The package re-exports the publish() function under the submodule's name.
        module: Any = importlib.import_module("tasks.scoring.publish")
        module.CHUNK_ROWS = 50_000
        insert = module.insert_frame

        def traced(*args: Any, **kwargs: Any) -> int:
            inserted = insert(*args, **kwargs)
            print("CHUNK", inserted, flush=True)
            return inserted

        module.insert_frame = traced
    set_id = write_score_set(
        engine, model=model, version=2, as_of=200, run_id=run_id, frame=data, created_ts=200
    )
    print("STAGED", set_id, flush=True)
    time.sleep(600)  # "about to publish": the parent SIGKILLs us here


if __name__ == "__main__":
    main()

"""One train-model run in a child process, for the R7 race: python -m tests.integration.train_racer.

MODEL AS_OF GO  -> the real train-model flow (no feature build) on the platform the environment
names (LIVEYIELD_DB_URL, MLFLOW_TRACKING_URI, PREFECT_API_URL…), with the model under the lenient
policy of the flow tests. Prints READY once imported, waits for the file GO to exist (the start
line the parent draws when every racer is ready), then prints the result as JSON on its last line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

from tasks.settings import apply_process_defaults

apply_process_defaults()  # before any library that phones home loads

from flows.models import train_model  # noqa: E402
from tasks.models import catalog  # noqa: E402
from tasks.models.spec import PromotionPolicy, ValueThreshold  # noqa: E402

# The flow's mechanics are under test, not a tiny platform's model quality: a policy any sane
# classifier passes (AUC above chance) stands in for the catalog's.
LENIENT = PromotionPolicy(value_thresholds=(ValueThreshold("auc", lower=0.5),))


def main() -> None:
    model, as_of, go = sys.argv[1], dt.datetime.fromisoformat(sys.argv[2]), Path(sys.argv[3])
    catalog.MODELS[model] = dataclasses.replace(catalog.MODELS[model], policy=LENIENT)
    print("READY", flush=True)
    deadline = time.monotonic() + 300
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the start line was never drawn")
        time.sleep(0.01)
    began = time.monotonic()
    result = train_model(model, as_of=as_of, build=False)
    print(json.dumps({**dataclasses.asdict(result), "span": [began, time.monotonic()]}), flush=True)


if __name__ == "__main__":
    main()

"""One pipeline run in a child process, for the R9 kill: python -m tests.integration.pipeline_runner.

MODEL AS_OF -> the real pipeline flow (validate, build every feature view, train, gate, promote,
score) for that model on the platform the environment names (LIVEYIELD_DB_URL,
MLFLOW_TRACKING_URI, PREFECT_API_URL…), the model under the lenient policy of the flow tests.
Prints the result as JSON on its last line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys

from tasks.settings import apply_process_defaults

apply_process_defaults()  # before any library that phones home loads

from flows.models import pipeline  # noqa: E402
from tasks.models import catalog  # noqa: E402
from tests.integration.train_racer import LENIENT  # noqa: E402


def main() -> None:
    model, as_of = sys.argv[1], dt.datetime.fromisoformat(sys.argv[2])
    catalog.MODELS[model] = dataclasses.replace(catalog.MODELS[model], policy=LENIENT)
    result = pipeline(models=[model], as_of=as_of)
    print(json.dumps(dataclasses.asdict(result), default=str), flush=True)


if __name__ == "__main__":
    main()

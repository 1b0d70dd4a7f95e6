"""liveyield Prefect flows: short scripts that chain the steps in tasks/ and branch on results."""

import os

# This platform runs on machines without outbound network: keep the libraries' telemetry
# from trying to phone home (each would otherwise time out on first use).
for _name, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
}.items():
    os.environ.setdefault(_name, _value)

"""Operations: local servers, deployments, remote runs, the doctor and the flows' Dask task runner;
no domain logic."""

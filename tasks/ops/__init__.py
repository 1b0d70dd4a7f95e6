"""Operations: local servers, deployments, remote runs and the doctor; no domain logic."""

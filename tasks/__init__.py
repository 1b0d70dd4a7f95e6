"""liveyield units of work: plain typed Python, grouped by capability; flows chain them."""

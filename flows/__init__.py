"""liveyield Prefect flows: short scripts that chain the steps in tasks/ and branch on results.

Importing this package changes nothing in the process (no environment variables are set).
"""

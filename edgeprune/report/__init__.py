"""Reports: the table that puts latency next to leakage and accuracy."""

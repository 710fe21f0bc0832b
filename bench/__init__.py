"""CDAP benchmarks (`make bench`): each measures CDAP and a baseline in the same run."""

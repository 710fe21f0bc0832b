"""The `cdap` command line."""

"""What every CDAP service shares."""

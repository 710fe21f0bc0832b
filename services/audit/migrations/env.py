from cdap_audit import models
from cdap_shared.migrations import run_env

run_env(models.metadata)

"""Writes of the training app, one module per job:

- runs: the run state machine (queue, start, heartbeat, succeed, fail, cancel, reap); tasks are sent
  by name (training.plan.TASK_OF_KIND) once the transaction commits.
- execution: the frame of every run task (run_execute), the progress reporter and heartbeat thread.
- versions: the model registry (register, promote, demote, metrics) and the base models.
- rounds: the chained training round (pipeline) and the scheduled retrain check.
- reward, policy, evaluation, candidates, ab: the bodies of the training, evaluation, candidate
  generation and blind A/B tasks.
- schedules: the django-celery-beat schedules.
"""

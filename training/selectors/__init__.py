"""Reads of the training app, one module per subject: runs (runs, rounds, the runs page JSON),
versions (the model registry), data (what each trainer and evaluation reads from labeling's tables,
split by labeling.splits) and ab (blind A/B evaluations and their leaderboard). No writes here."""

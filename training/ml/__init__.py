"""Plain torch/transformers training code. No Django imports here: the Celery tasks in
training/tasks.py feed these functions plain Python data and store what they return."""

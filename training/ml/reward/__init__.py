"""Reward model (InstructGPT step 2, section 3.5): a backbone plus a scalar head, trained on ranked
groups of K responses with the grouped pairwise loss. No Django here; the Celery layer calls
`loop.train_reward_model` and passes a progress callback.

Read in this order, one job per file:
  config.py    RewardConfig: every option, with why it has its default
  model.py     RewardModel: backbone -> pooled state -> linear head; LoRA adapters on and merged off
  loss.py      the grouped ranking loss and ODIN's length regularisers (pure functions)
  data.py      ranked groups, the prompt split, truncation (PairEncoder) and batches
  loop.py      train_reward_model: train, normalise, validate, save
  artifact.py  the saved folder: save_reward_model, load_reward_model, score
  evaluate.py  how a reward model is judged on preference pairs: accuracy, margins, and how much
               of it is length (the loop's validation and reward_model_evaluate both report these)
"""

"""Training: the Trainer subclass and its arguments, objectives (answer, soft, RL) and rewards, checkpoints and
resuming, the feature cache of frozen encoders, and joining a distributed job."""

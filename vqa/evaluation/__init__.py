"""Evaluation: the official VQA accuracy rules, scoring a split's answers, the validation accuracy that model
selection reads, answer priors and the shuffled-image check, and scoring official result files."""

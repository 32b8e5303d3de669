"""What several test modules share: running train.py, fixture datasets and models, report checks."""

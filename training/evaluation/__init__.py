"""The evaluator's metrics (python -m training.evaluate): one module per metric family."""

"""The training machinery: the loop, runs and their folders, saving and resuming, distributed training, options and
reporting. No model imports it."""

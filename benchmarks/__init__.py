"""Benchmarks of rnnvision against its peers. Run: `python -m benchmarks.rnn_speed`."""

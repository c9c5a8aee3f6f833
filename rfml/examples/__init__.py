"""Runnable examples: the demo behind `make demo` (`python -m rfml.examples.demo`) and a tour of the datasets."""

"""Offline evaluation: the prequential (streaming) protocol, leave-last-out, and the baselines beside the models."""

"""Processes a command starts and later stops on this machine (``rollout start --spawn``, ``rollout retire``)."""

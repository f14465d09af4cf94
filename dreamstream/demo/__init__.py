"""`dreamstream demo`: the whole system on one machine, end to end, ending with a readable result."""

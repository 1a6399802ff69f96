"""Deciding what a change means: issue, reverse, ignore or undecided, always with a
reason (`decide`), from the DBAs' conditions evaluated three-valued (`conditions`)."""

"""Launchers that start the experiment scripts on several processes or hosts."""

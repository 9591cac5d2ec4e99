"""Pulumi policy pack: the GRC controls of DESIGN.md as checks (rules.py), served by __main__.py."""

"""Command-line entry points of damcseg (wired as console scripts in setup.py).

Each module exposes ``main(argv=None) -> int`` so it can be called from tests without a shell.
"""

"""The command line: one module per command (train, sample and interpolate, evaluate, export), the one table
of the train command's flags, and what every command shares. main.py chooses the command."""

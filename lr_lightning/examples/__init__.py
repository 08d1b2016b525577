"""Worked examples of extending lr-lightning; ``docs/adding_a_method.md`` shows their code."""

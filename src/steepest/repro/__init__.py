"""Small experiments, one per paper claim: each returns its figures and has a ``python -m`` entry."""

"""Plumbing that is not from the paper: paths, errors, profiles, the model loaders, records,
the notebook runner and tiny random models for tests. Imports no paper package."""

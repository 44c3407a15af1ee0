"""Plumbing that is not from the paper: paths, errors, profiles, the one model loader, the one
records reader/writer, the notebook runner and tiny random models for tests. Imports no paper
package."""

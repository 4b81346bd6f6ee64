"""Data that ship with galmeta; see PROVENANCE.md beside this file."""

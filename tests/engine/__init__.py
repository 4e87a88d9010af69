"""Tests of the module against a real Dagger engine (marked `engine`; skipped without one)."""

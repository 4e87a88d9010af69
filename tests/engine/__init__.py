"""Tests against a real Dagger engine (marker `engine`); they skip when none is reachable."""

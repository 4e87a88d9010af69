"""Tests of the Dagger module (against the engine double), the workflows and the deploy path."""

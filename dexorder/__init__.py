"""Seed alias."""
